package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Run runs one scenario and reports what it measured.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	d, err := newDialer(cfg.BaseURL, cfg.Spread)
	if err != nil {
		return nil, err
	}
	need := cfg.Streams*cfg.Followers + cfg.Sockets + 1024
	if err := RaiseFileLimit(uint64(need)); err != nil && cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "warning: %v\n", err)
	}
	r := &run{cfg: cfg, dial: d, http: &http.Client{Timeout: 30 * time.Second}}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	reads0 := r.historyReads()
	if cfg.Probe != nil {
		cfg.Probe.Start()
	}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { r.progress(cfg.Progress, start, stop) })

	rep := &Report{Scenario: cfg.Scenario}
	switch cfg.Scenario {
	case Steady, FanOut, Tools:
		rep.Streams, rep.Followers, rep.Tokens, rep.Rate = cfg.Streams, cfg.Followers, cfg.Tokens, cfg.Rate
		err = r.streams(ctx)
	case Idle:
		err = r.idle(ctx, rep)
	case Storm:
		rep.Followers, rep.Tokens, rep.Rate = cfg.Sockets, cfg.Tokens, cfg.Rate
		err = r.storm(ctx, rep)
	case Churn:
		err = r.churn(ctx)
	case Soak:
		rep.Streams, rep.Tokens, rep.Rate = cfg.Streams, cfg.Tokens, cfg.Rate
		err = r.soak(ctx, rep)
	default:
		err = fmt.Errorf("unknown scenario %q (steady, fanout, tools, idle, storm, churn, soak)", cfg.Scenario)
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	if cfg.Probe != nil {
		res := cfg.Probe.Stop()
		rep.Probe = &res
	}
	if reads := r.historyReads(); reads >= 0 && reads0 >= 0 {
		rep.HistoryReads = reads - reads0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Sockets = r.opened.Load()
	rep.Seconds = elapsed.Seconds()
	rep.Generations = r.started.Load()
	rep.Chunks = r.chunks.Load()
	rep.Done = r.dones.Load()
	rep.Lost = r.lost.Load()
	rep.Duplicated = r.dups.Load()
	rep.Snapshots = r.snapshots.Load()
	rep.SocketErrors = r.sockErrs.Load()
	rep.ErrorSample = r.errSample
	rep.DeliveriesPerS = float64(rep.Chunks) / elapsed.Seconds()
	rep.TTFB = DistOf(r.ttfb)
	rep.Delivery = DistOf(r.latencies)
	rep.CatchUp = DistOf(r.catchUp)
	rep.latencies = r.latencies
	if p := rep.Probe; p != nil && p.ServerCPUSeconds+p.RedisCPUSeconds > 0 {
		rep.DeliveriesPerCPU = float64(rep.Chunks) / (p.ServerCPUSeconds + p.RedisCPUSeconds)
	}
	return rep, err
}

// historyReads scrapes the server's history read counter; -1 if unknown.
func (r *run) historyReads() int64 { return r.metric("chatstream_history_reads_total") }

// RaiseFileLimit raises this process's open-file limit to at least n, up
// to what the kernel allows (root may raise the hard limit too).
func RaiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	want := lim
	want.Cur = n
	if want.Max < n {
		want.Max = n
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if max, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && want.Max > max {
				want.Max, want.Cur = max, max
			}
		}
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		// Not root: take what the hard limit allows.
		want = lim
		want.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
		return fmt.Errorf("open-file limit %d is below the %d this run needs", lim.Max, n)
	}
	return nil
}

// limiter bounds the sockets being opened at once.
type limiter chan struct{}

func (l limiter) do(f func()) { l <- struct{}{}; defer func() { <-l }(); f() }

// streams runs the steady and fan-out scenarios: Streams generations, each
// sent from one socket and followed by Followers-1 more.
func (r *run) streams(ctx context.Context) error {
	cfg := r.cfg
	lim := make(limiter, cfg.DialConcurrency)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		if ctx.Err() == nil {
			r.noteErr(err)
			errOnce.Do(func() { firstErr = err })
		}
	}
	for i := range cfg.Streams {
		if cfg.Ramp > 0 && i > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.Ramp / time.Duration(cfg.Streams)):
			}
		}
		if ctx.Err() != nil {
			break
		}
		user := fmt.Sprintf("load-%d", i%cfg.Users)
		wg.Go(func() {
			var sender *socket
			var err error
			lim.do(func() { sender, err = r.open(ctx, user) })
			if err != nil {
				fail(err)
				return
			}
			defer sender.close()
			done := make(chan struct{})
			var once sync.Once
			go func() { sender.readLoop(ctx, func(string) { once.Do(func() { close(done) }) }) }()
			id, err := r.generate(ctx, sender, user)
			if err != nil {
				fail(err)
				return
			}
			var fwg sync.WaitGroup
			for range cfg.Followers - 1 {
				if cfg.SSE {
					fwg.Go(func() {
						if err := r.followSSE(ctx, user, id); err != nil {
							fail(err)
						}
					})
					continue
				}
				fwg.Go(func() {
					var s *socket
					var err error
					lim.do(func() { s, err = r.open(ctx, user) })
					if err != nil {
						fail(err)
						return
					}
					defer s.close()
					fdone := make(chan struct{})
					var fonce sync.Once
					go func() { s.readLoop(ctx, func(string) { fonce.Do(func() { close(fdone) }) }) }()
					if err := s.follow(ctx, id, -1); err != nil {
						fail(err)
						return
					}
					select {
					case <-fdone:
					case <-ctx.Done():
					}
				})
			}
			select {
			case <-done:
			case <-ctx.Done():
			}
			fwg.Wait()
		})
	}
	wg.Wait()
	if ctx.Err() != nil && r.dones.Load() < int64(cfg.Streams*cfg.Followers) {
		return fmt.Errorf("run ended by its time limit with %d of %d followers done", r.dones.Load(), cfg.Streams*cfg.Followers)
	}
	return firstErr
}

// idle opens Sockets sockets that follow nothing and measures the server's
// memory per socket.
func (r *run) idle(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	before := int64(0)
	if cfg.Probe != nil {
		before = cfg.Probe.RSS()
	}
	lim := make(limiter, cfg.DialConcurrency)
	socks := make([]*socket, cfg.Sockets)
	var wg sync.WaitGroup
	for i := range socks {
		wg.Go(func() {
			lim.do(func() {
				s, err := r.open(ctx, fmt.Sprintf("idle-%d", i%cfg.Users))
				if err != nil {
					r.noteErr(err)
					return
				}
				socks[i] = s
			})
		})
	}
	wg.Wait()
	var readers sync.WaitGroup
	for _, s := range socks {
		if s != nil {
			readers.Go(func() { s.readLoop(ctx, nil) })
		}
	}
	// Let the server settle (GC, buffers) before reading its memory.
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
	if cfg.Probe != nil {
		after := cfg.Probe.RSS()
		if n := r.opened.Load(); n > 0 && after > before {
			rep.IdleBytesPerSock = float64(after-before) / float64(n)
		}
	}
	for _, s := range socks {
		if s != nil {
			s.close()
		}
	}
	readers.Wait()
	if r.sockErrs.Load() > 0 {
		return fmt.Errorf("%d sockets failed", r.sockErrs.Load())
	}
	return nil
}

// storm makes Sockets sockets follow one running stream, drops them all at
// once, and resumes them all at once from the last index each holds.
func (r *run) storm(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	user := "storm"
	sender, err := r.open(ctx, user)
	if err != nil {
		return err
	}
	defer sender.close()
	go sender.readLoop(ctx, nil)
	id, err := r.generate(ctx, sender, user)
	if err != nil {
		return err
	}
	lim := make(limiter, cfg.DialConcurrency)
	n := cfg.Sockets
	fs := make([]*follower, n)
	connect := func(i int, resume bool) (*socket, error) {
		var s *socket
		var err error
		lim.do(func() { s, err = r.open(ctx, user) })
		if err != nil {
			return nil, err
		}
		go s.readLoop(ctx, nil)
		s.mu.Lock()
		if fs[i] == nil {
			fs[i] = &follower{since: time.Now().UnixMicro()}
		}
		f := fs[i]
		if resume {
			f.resumeAt = time.Now()
		}
		s.fs[id] = f
		s.mu.Unlock()
		return s, s.follow(ctx, id, f.next-1)
	}
	// Phase 1: everyone follows and catches up: the storm hits followers
	// that were live, as when a node or a network path fails.
	socks := make([]*socket, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := connect(i, false)
			if err != nil {
				r.noteErr(err)
				return
			}
			socks[i] = s
		})
	}
	wg.Wait()
	if err := r.await(ctx, func() bool {
		for i, s := range socks {
			if s == nil {
				continue
			}
			s.mu.Lock()
			live := fs[i].live || fs[i].done
			s.mu.Unlock()
			if !live {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("followers did not catch up before the storm: %w", err)
	}
	// Phase 2: all drop at once, then all resume at once.
	for _, s := range socks {
		if s != nil {
			s.closed.Store(true)
			s.conn.CloseNow()
		}
	}
	reads0 := r.historyReads()
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			s, err := connect(i, true)
			if err != nil {
				r.noteErr(err)
				return
			}
			socks[i] = s
		})
	}
	close(start)
	wg.Wait()
	err = r.await(ctx, func() bool {
		for i, s := range socks {
			if s == nil {
				continue
			}
			s.mu.Lock()
			live := fs[i].resumeAt.IsZero() || fs[i].done
			s.mu.Unlock()
			if !live {
				return false
			}
		}
		return true
	})
	if reads := r.historyReads(); reads >= 0 && reads0 >= 0 {
		reads -= reads0
		rep.ResumeReads = &reads
	}
	for i, s := range socks {
		if s != nil {
			s.mu.Lock()
			r.flush(fs[i])
			s.mu.Unlock()
			// Measuring is over: drop them at once (a close handshake per
			// socket while the stream still pours in takes long).
			s.closed.Store(true)
			s.conn.CloseNow()
		}
	}
	return err
}

// await polls cond every 10ms until it holds or ctx ends.
func (r *run) await(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// churn keeps Sockets sockets coming and going for the whole run: each
// connects, follows one of Streams running generations from its start for a
// random while, and leaves.
func (r *run) churn(ctx context.Context) error {
	cfg := r.cfg
	user := "churn"
	ids := make([]string, 0, cfg.Streams)
	for range cfg.Streams {
		s, err := r.open(ctx, user)
		if err != nil {
			return err
		}
		defer s.close()
		go s.readLoop(ctx, nil)
		id, err := r.generate(ctx, s, user)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	for w := range cfg.Sockets {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				s, err := r.open(ctx, user)
				if err != nil {
					if ctx.Err() == nil {
						r.noteErr(err)
					}
					return
				}
				readerDone := make(chan struct{})
				go func() { defer close(readerDone); s.readLoop(ctx, nil) }()
				id := ids[rng.IntN(len(ids))]
				if err := s.follow(ctx, id, -1); err != nil && ctx.Err() == nil {
					r.noteErr(err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(100+rng.IntN(900)) * time.Millisecond):
				}
				s.close()
				<-readerDone
				s.mu.Lock()
				r.flush(s.fs[id])
				s.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n := r.sockErrs.Load(); n > 0 {
		return fmt.Errorf("%d socket errors during churn: %v", n, r.errSample)
	}
	return nil
}
