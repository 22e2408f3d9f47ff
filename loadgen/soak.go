package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// Soak runs steady load with churn, cancels, resumes and bad frames for the
// whole run, and samples the server's resources at its start, middle and
// end, and once it drained.
const Soak = "soak"

// SoakSample is the server's resources at one moment of a soak.
type SoakSample struct {
	At          string  `json:"at"` // start, middle, end (under load), after (drained)
	Seconds     float64 `json:"seconds"`
	RSS         int64   `json:"server_rss_bytes"`
	Goroutines  int64   `json:"server_goroutines"`
	OpenFDs     int64   `json:"server_open_fds"`
	RedisMemory int64   `json:"redis_used_memory_bytes"`
	Sockets     int64   `json:"server_open_sockets"`
}

// SoakReport is what a soak did besides streaming, and how the server's
// resources went.
type SoakReport struct {
	Cancels       int64        `json:"cancels"`
	Resumes       int64        `json:"resumes"`
	BadFrames     int64        `json:"bad_frames"`
	BadAnswered   int64        `json:"bad_frames_answered"`
	Samples       []SoakSample `json:"samples"`
	Growth        []string     `json:"growth,omitempty"` // what grew, if anything
	SamplesPartly bool         `json:"samples_partly,omitempty"`
}

// badFrames are what a careless client sends; each gets an error frame.
var badFrames = []string{
	`not json`,
	`{"type":"dance"}`,
	`{"type":"subscribe"}`,
	`{"type":"subscribe","stream_id":"00000000-0000-4000-8000-000000000000","last_index":"7"}`,
	`{"type":"send","conversation_id":"00000000-0000-4000-8000-000000000000","content":"x"}`,
	`{"type":"cancel","stream_id":"nope"}`,
}

// soak keeps Streams loops busy until the run's end: each starts a
// generation, follows it (a third of them drop their socket midway and
// resume on a new one from the last index they hold; a quarter cancel it),
// sends a bad frame, and starts the next.
func (r *run) soak(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	sr := &SoakReport{}
	rep.Soak = sr
	start := time.Now()
	sample := func(at string) {
		s := r.sample(at, time.Since(start))
		r.mu.Lock()
		sr.Samples = append(sr.Samples, s)
		r.mu.Unlock()
	}
	sample("start")
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var samplers sync.WaitGroup
	samplers.Go(func() {
		for i, at := range []string{"middle", "end"} {
			// The end sample is taken a little before the time limit, while
			// the load still runs.
			wait := cfg.Duration/2 - time.Since(start)
			if i == 1 {
				wait = cfg.Duration - cfg.Duration/20 - 5*time.Second - time.Since(start)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(max(wait, 0)):
			}
			sample(at)
		}
		stopLoad()
	})
	var wg sync.WaitGroup
	var cancels, resumes, bad, answered atomic.Int64
	for w := range cfg.Streams {
		user := fmt.Sprintf("soak-%d", w%cfg.Users)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			for loadCtx.Err() == nil {
				if err := r.soakOnce(loadCtx, rng, user, &cancels, &resumes, &bad, &answered); err != nil && loadCtx.Err() == nil {
					r.noteErr(err)
					select { // back off after a failure
					case <-loadCtx.Done():
					case <-time.After(time.Second):
					}
				}
			}
		})
	}
	wg.Wait()
	samplers.Wait()
	// Drained: the sockets are closed and their generations ended.
	deadline := time.Now().Add(30 * time.Second)
	for r.metric("chatstream_websockets_open") > 0 || r.metric("chatstream_generations_active") > 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			sr.SamplesPartly = true
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the server's gauges
	}
	sample("after")
	sr.Cancels, sr.Resumes, sr.BadFrames, sr.BadAnswered = cancels.Load(), resumes.Load(), bad.Load(), answered.Load()
	sr.Growth = sr.growth()
	if sr.BadAnswered != sr.BadFrames {
		return fmt.Errorf("%d bad frames sent, %d answered with an error frame", sr.BadFrames, sr.BadAnswered)
	}
	return nil
}

// soakOnce runs one generation of a soak loop.
func (r *run) soakOnce(ctx context.Context, rng *rand.Rand, user string, cancels, resumes, bad, answered *atomic.Int64) error {
	s, done, stop, err := r.openReading(ctx, user)
	if err != nil {
		return err
	}
	defer stop()
	id, err := r.generate(ctx, s, user)
	if err != nil {
		return err
	}
	// A bad frame: it gets an error frame and changes nothing. Its answer
	// is awaited (one not in within 10 s is a socket error), unless the run
	// ends first.
	s.expectErrors.Add(1)
	if err := writeRaw(ctx, s.conn, badFrames[rng.IntN(len(badFrames))]); err != nil {
		return err
	}
	actx, cancelWait := context.WithTimeout(ctx, 10*time.Second)
	err = r.await(actx, func() bool { return s.answeredErrors.Load() == 1 })
	cancelWait()
	switch {
	case err == nil:
		bad.Add(1)
		answered.Add(1)
	case ctx.Err() == nil:
		bad.Add(1)
		return errors.New("a bad frame got no error frame within 10 s")
	}
	drop, cancel := rng.IntN(3) == 0, rng.IntN(4) == 0
	after := int64(rng.IntN(max(1, r.cfg.Tokens/2)))
	if drop || cancel {
		if err := r.awaitIndex(ctx, s, id, after); err != nil {
			return err
		}
	}
	if cancel {
		cancels.Add(1)
		if err := writeJSON(ctx, s.conn, map[string]any{"type": "cancel", "stream_id": id}); err != nil {
			return err
		}
	}
	if !drop {
		select {
		case <-done:
		case <-ctx.Done():
		}
		r.flushSocket(s, id)
		return nil
	}
	// Drop the socket and resume on a new one from the last index held.
	stop()
	s.mu.Lock()
	f := s.fs[id]
	s.mu.Unlock()
	if f.done {
		r.flush(f)
		return nil
	}
	resumes.Add(1)
	s2, done2, stop2, err := r.openReading(ctx, user)
	if err != nil {
		return err
	}
	defer stop2()
	s2.mu.Lock()
	s2.fs[id] = &follower{next: f.next, since: time.Now().UnixMicro()}
	s2.mu.Unlock()
	if err := writeJSON(ctx, s2.conn, map[string]any{"type": "subscribe", "stream_id": id, "last_index": f.next - 1}); err != nil {
		return err
	}
	select {
	case <-done2:
	case <-ctx.Done():
	}
	r.flushSocket(s2, id)
	return nil
}

// openReading opens a socket of user with its reader running: done is
// closed when a stream it follows ends; stop (idempotent) closes the socket
// and waits for the reader, which lives until then.
func (r *run) openReading(ctx context.Context, user string) (s *socket, done <-chan struct{}, stop func(), err error) {
	s, err = r.open(ctx, user)
	if err != nil {
		return nil, nil, nil, err
	}
	ended := make(chan struct{})
	var once, stopOnce sync.Once
	readerDone := make(chan struct{})
	go func() { defer close(readerDone); s.readLoop(ctx, func(string) { once.Do(func() { close(ended) }) }) }()
	return s, ended, func() { stopOnce.Do(func() { s.close(); <-readerDone }) }, nil
}

// awaitIndex waits until socket s holds chunk idx of stream id (or the
// stream ended).
func (r *run) awaitIndex(ctx context.Context, s *socket, id string, idx int64) error {
	return r.await(ctx, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		f := s.fs[id]
		return f != nil && (f.next > idx || f.done)
	})
}

func (r *run) flushSocket(s *socket, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.fs[id]; f != nil {
		r.flush(f)
	}
}

// sample reads the server's resources now.
func (r *run) sample(at string, since time.Duration) SoakSample {
	s := SoakSample{At: at, Seconds: since.Seconds(),
		Goroutines: r.metric("go_goroutines"), Sockets: r.metric("chatstream_websockets_open")}
	if p := r.cfg.Probe; p != nil {
		s.RSS = p.RSS()
		s.OpenFDs = openFDs(p.ServerPID)
		s.RedisMemory = p.RedisMemory()
	}
	return s
}

// growth says which resources grew: any of them under the same load, from
// the middle to the end; goroutines and open files also idle, from the
// start to after the drain (memory is not compared idle: a fresh process's
// heap is smaller than one that has served, leak or not). Small changes
// are noise: a tenth plus a margin.
func (sr *SoakReport) growth() []string {
	at := map[string]SoakSample{}
	for _, s := range sr.Samples {
		at[s.At] = s
	}
	var out []string
	check := func(what, from, to string, get func(SoakSample) int64, margin int64) {
		a, okA := at[from]
		b, okB := at[to]
		if !okA || !okB || get(a) <= 0 {
			return
		}
		if x, y := get(a), get(b); y > x+x/10+margin {
			out = append(out, fmt.Sprintf("%s %s→%s: %d → %d", what, from, to, x, y))
		}
	}
	for _, pair := range [][2]string{{"middle", "end"}, {"start", "after"}} {
		if pair[0] == "middle" {
			check("server RSS", pair[0], pair[1], func(s SoakSample) int64 { return s.RSS }, 8<<20)
			check("redis memory", pair[0], pair[1], func(s SoakSample) int64 { return s.RedisMemory }, 8<<20)
		}
		check("goroutines", pair[0], pair[1], func(s SoakSample) int64 { return s.Goroutines }, 50)
		// Idle, the pools of Postgres and Redis connections account for a
		// few dozen files that a fresh process has not opened yet.
		check("open fds", pair[0], pair[1], func(s SoakSample) int64 { return s.OpenFDs }, 50)
	}
	return out
}

// print writes the soak's table.
func (sr *SoakReport) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "cancels / resumes / bad frames (answered)\t%d / %d / %d (%d)\n", sr.Cancels, sr.Resumes, sr.BadFrames, sr.BadAnswered)
	fmt.Fprintf(tw, "sample\tat\tserver RSS\tgoroutines\topen fds\tsockets\tredis memory\n")
	for _, s := range sr.Samples {
		fmt.Fprintf(tw, "%s\t%.0fs\t%s\t%d\t%d\t%d\t%s\n", s.At, s.Seconds, mib(s.RSS), s.Goroutines, s.OpenFDs, s.Sockets, mib(s.RedisMemory))
	}
	switch {
	case len(sr.Growth) > 0:
		fmt.Fprintf(tw, "grew\t%s\n", strings.Join(sr.Growth, "; "))
	default:
		fmt.Fprintf(tw, "resources\tflat (all middle→end under load; goroutines and fds start→after idle)\n")
	}
	if sr.SamplesPartly {
		fmt.Fprintf(tw, "note\tthe server had not drained 30 s after the load stopped\n")
	}
	tw.Flush()
}

// metric scrapes one unlabelled metric from the server; -1 if unknown.
func (r *run) metric(name string) int64 {
	res, err := r.http.Get(strings.TrimRight(r.cfg.BaseURL, "/") + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return -1
}

// openFDs counts a process's open file descriptors.
func openFDs(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return int64(len(ents))
}
