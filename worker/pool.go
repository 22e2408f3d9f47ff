package worker

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/tools"
)

// Config tunes the pool. Zero values take the defaults.
type Config struct {
	// Workers is the number of generations this node runs at once. Default
	// DefaultWorkers.
	Workers int
	// Takers is the number of goroutines waiting for jobs (each holds one
	// blocking Redis connection). Default 4.
	Takers int
	// SystemPrompt starts every prompt; empty for none.
	SystemPrompt string
	// HistoryMessages and HistoryBytes bound the earlier messages sent with
	// the prompt: the newest that fit. Defaults 50 and DefaultHistoryBytes.
	HistoryMessages int
	HistoryBytes    int
	// MaxTokens caps each answer; 0 leaves it to the provider.
	MaxTokens int
	// MaxAnswerBytes caps the text of each answer, for every model: past
	// it the answer ends complete with finish reason "length". Default
	// DefaultMaxAnswerBytes.
	MaxAnswerBytes int
	// StallTimeout fails a generation that receives no token for this long.
	// Default DefaultStallTimeout.
	StallTimeout time.Duration
	// FlushInterval coalesces the deltas that arrive within it into one
	// chunk; 0 makes every delta a chunk (lowest latency, most chunks).
	FlushInterval time.Duration
	// MaxRuns bounds how often a job that emitted no chunk is run again
	// after its node died. Default 3.
	MaxRuns int
	// ReapInterval is how often the node looks for dead nodes' jobs. Default 2s.
	ReapInterval time.Duration
	// AppendRetryFor is how long a chunk append is retried through Redis
	// errors before the generation fails. Default 30s.
	AppendRetryFor time.Duration
	// CommitWait bounds how long a worker waits for its message's
	// transaction to commit before it takes the message for gone. Default 5s.
	CommitWait time.Duration
	// HandBackWait bounds the work of handing jobs back once the grace
	// period of Shutdown is over. Default 5s.
	HandBackWait time.Duration
	// RecoverTimeout bounds the recovery of one job of a dead node; a job
	// not recovered in time goes back to the queue. Default 30s.
	RecoverTimeout time.Duration
	// SweepInterval is how often one node of the cluster looks for answers
	// Postgres holds open whose stream Redis lost. Default 1m.
	SweepInterval time.Duration
	// SweepGrace is how old an open answer must be to be swept. Default 1m.
	SweepGrace time.Duration
	// Tools are offered to the model; nil for none.
	Tools *tools.Set
	// MaxToolRounds bounds the model calls of one answer; the last is made
	// with tools off. Default DefaultMaxToolRounds.
	MaxToolRounds int
	// ApprovalTimeout is how long a tool call that needs approval waits for
	// the user's answer. Default DefaultApprovalTimeout.
	ApprovalTimeout time.Duration
	Logger          *slog.Logger
	Metrics         *Metrics
}

func (c *Config) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.Takers <= 0 {
		c.Takers = 4
	}
	if c.HistoryMessages <= 0 {
		c.HistoryMessages = 50
	}
	if c.HistoryBytes <= 0 {
		c.HistoryBytes = DefaultHistoryBytes
	}
	if c.MaxAnswerBytes <= 0 {
		c.MaxAnswerBytes = DefaultMaxAnswerBytes
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.MaxRuns <= 0 {
		c.MaxRuns = 3
	}
	if c.ReapInterval <= 0 {
		c.ReapInterval = 2 * time.Second
	}
	if c.AppendRetryFor <= 0 {
		c.AppendRetryFor = 30 * time.Second
	}
	if c.CommitWait <= 0 {
		c.CommitWait = 5 * time.Second
	}
	if c.HandBackWait <= 0 {
		c.HandBackWait = 5 * time.Second
	}
	if c.RecoverTimeout <= 0 {
		c.RecoverTimeout = 30 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Minute
	}
	if c.SweepGrace <= 0 {
		c.SweepGrace = time.Minute
	}
	if c.MaxToolRounds <= 0 {
		c.MaxToolRounds = DefaultMaxToolRounds
	}
	if c.ApprovalTimeout <= 0 {
		c.ApprovalTimeout = DefaultApprovalTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Defaults of Config.
const (
	// DefaultWorkers is the number of generations a node runs at once.
	DefaultWorkers = 64
	// DefaultHistoryBytes bounds the earlier messages sent with a prompt.
	DefaultHistoryBytes = 24000
	// DefaultStallTimeout fails a generation that gets no token for as long.
	DefaultStallTimeout = 60 * time.Second
	// DefaultMaxAnswerBytes is the largest answer, 1 MiB.
	DefaultMaxAnswerBytes = 1 << 20
	// DefaultMaxToolRounds bounds the model calls of one answer.
	DefaultMaxToolRounds = 8
	// DefaultApprovalTimeout is how long a tool call waits for approval.
	DefaultApprovalTimeout = 10 * time.Minute
	// DefaultSystemPrompt is the system prompt a node starts every prompt
	// with unless told otherwise (Config's zero value is none).
	DefaultSystemPrompt = "You are a helpful assistant."
)

// Causes that end a generation early.
var (
	errCancelRequested = errors.New("cancel requested")
	errStalled         = errors.New("no token within the stall timeout")
	errFenced          = errors.New("job taken over by another worker")
	errShutdown        = errors.New("node shutting down")
	errRedis           = errors.New("redis unavailable")
	errAnswerFull      = errors.New("the answer reached MaxAnswerBytes")
	errGone            = errors.New("the stream is gone (its conversation deleted, or expired)")
)

// Pool runs the generation workers of a node, its heartbeat and its reaper.
type Pool struct {
	cfg      Config
	store    Store
	chunks   *streaming.ChunkLog
	queue    *streaming.Queue
	hub      *streaming.Hub
	provider llm.Provider
	fin      *finisher
	logger   *slog.Logger
	metrics  *Metrics
	owner    string

	// takeCtx ends when the pool stops taking jobs; runCtx when running
	// generations must stop (cause errShutdown); finCtx when finishing work
	// must give up; beatCtx once the workers have stopped, so that the
	// node is not taken for dead while it drains.
	takeCtx, runCtx, finCtx, beatCtx context.Context
	stopTaking                       context.CancelFunc
	stopRunning                      context.CancelCauseFunc
	stopFinishing                    context.CancelFunc
	stopBeating                      context.CancelFunc

	workers sync.WaitGroup // the takers and the worker goroutines
	helpers sync.WaitGroup // heartbeat and reaper
}

// NewPool returns a pool; Start starts it.
func NewPool(cfg Config, store Store, chunks *streaming.ChunkLog, queue *streaming.Queue, hub *streaming.Hub,
	events *streaming.Events, limits Limits, provider llm.Provider) *Pool {
	cfg.setDefaults()
	p := &Pool{cfg: cfg, store: store, chunks: chunks, queue: queue, hub: hub, provider: provider,
		logger: cfg.Logger, metrics: cfg.Metrics, owner: queue.Node()}
	p.fin = &finisher{store: store, chunks: chunks, events: events, limits: orNoLimits(limits), logger: cfg.Logger, metrics: cfg.Metrics}
	p.finCtx, p.stopFinishing = context.WithCancel(context.Background())
	p.runCtx, p.stopRunning = context.WithCancelCause(p.finCtx)
	p.takeCtx, p.stopTaking = context.WithCancel(p.runCtx)
	p.beatCtx, p.stopBeating = context.WithCancel(context.Background())
	return p
}

// Start starts the workers, the heartbeat and the reaper. The heartbeat is
// written once before any job is taken, so the node's jobs are never
// mistaken for a dead node's.
func (p *Pool) Start(ctx context.Context) error {
	if err := p.queue.Heartbeat(ctx); err != nil {
		return err
	}
	p.helpers.Add(3)
	// The reaper and the sweep live until Shutdown cancels takeCtx; the
	// heartbeat until Shutdown has seen every worker stop (beatCtx).
	go func() { defer p.helpers.Done(); p.heartbeat() }()
	go func() { defer p.helpers.Done(); p.every(p.cfg.ReapInterval, p.reap) }()
	go func() { defer p.helpers.Done(); p.every(p.cfg.SweepInterval, p.sweep) }()
	// slots holds a token per running generation; its capacity is the
	// number of workers.
	slots := make(chan struct{}, p.cfg.Workers)
	for range min(p.cfg.Workers, p.cfg.Takers) {
		p.workers.Add(1)
		// Each taker lives until Shutdown cancels takeCtx.
		go func() { defer p.workers.Done(); p.take(slots) }()
	}
	p.logger.Info("generation workers started", "workers", p.cfg.Workers, "node", p.owner, "model", p.provider.Name())
	return nil
}

// Shutdown stops taking jobs and lets running generations finish until ctx
// ends; then it stops them, handing back those that emitted nothing and
// ending the others as failed with their partial text. It returns once every
// worker has stopped.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.stopTaking()
	done := make(chan struct{})
	go func() { p.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.logger.Warn("grace period over; handing back running generations")
		p.stopRunning(errShutdown)
		select {
		case <-done:
		case <-time.After(p.cfg.HandBackWait):
			p.stopFinishing()
			<-done
		}
	}
	p.stopBeating()
	p.helpers.Wait()
	// Jobs that a worker moved but never started (a BLMOVE cut short) go
	// back to the queue; then the node says it is gone, so that reapers
	// elsewhere take at once whatever is still left.
	fctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandBackWait)
	defer cancel()
	p.recoverNode(fctx, p.owner)
	err := p.queue.Leave(fctx)
	p.stopFinishing()
	p.stopRunning(errShutdown)
	return err
}

func (p *Pool) heartbeat() {
	t := time.NewTicker(p.queue.HeartbeatTTL() / 3)
	defer t.Stop()
	for {
		select {
		case <-p.beatCtx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(p.beatCtx, p.queue.HeartbeatTTL()/3)
			if err := p.queue.Heartbeat(ctx); err != nil && p.beatCtx.Err() == nil {
				p.logger.Warn("heartbeat", "err", err)
			}
			cancel()
		}
	}
}

// take is one of the goroutines that take jobs: it waits for a free worker
// slot, then for a job, and runs the job on a new worker goroutine. A few
// takers serve any number of workers, so the node holds a few blocking Redis
// connections, not one per worker.
func (p *Pool) take(slots chan struct{}) {
	backoff := 50 * time.Millisecond
	for {
		select {
		case slots <- struct{}{}:
		case <-p.takeCtx.Done():
			return
		}
		// Not takeCtx: a BLMOVE cut by its context closes the connection
		// and may leave a moved job behind. BlockTimeout bounds the wait.
		t, ok, err := p.queue.Take(p.runCtx)
		if err != nil || !ok {
			<-slots
			if p.takeCtx.Err() != nil {
				return
			}
			if err != nil {
				p.logger.Warn("take job", "err", err)
				select {
				case <-p.takeCtx.Done():
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 5*time.Second)
			}
			continue
		}
		backoff = 50 * time.Millisecond
		if p.takeCtx.Err() != nil {
			// Taken as the pool stopped: give it back untouched.
			<-slots
			_ = p.queue.Requeue(p.finCtx, t.Raw)
			return
		}
		p.workers.Add(1)
		// The worker lives until its job has ended or been handed back.
		go func() {
			defer p.workers.Done()
			defer func() { <-slots }()
			p.processSafe(t)
		}()
	}
}

// processSafe is process that survives a panic (a bug): it is logged and
// the job is settled as a dead node's would be, run again if it emitted
// nothing (a bounded number of times), else ended with its text.
func (p *Pool) processSafe(t streaming.Taken) {
	defer func() {
		if v := recover(); v != nil {
			p.metrics.Panics.Inc()
			p.logger.Error("panic running a generation; settling its job", "stream_id", t.Job.StreamID,
				"panic", v, "stack", string(debug.Stack()))
			p.recoverOne(p.finCtx, t)
		}
	}()
	p.process(t)
}

// process runs one job to its end.
func (p *Pool) process(t streaming.Taken) {
	job := t.Job
	logger := p.logger.With("stream_id", job.StreamID)
	if job.EnqueuedAt > 0 {
		p.metrics.QueueWait.Observe(time.Since(time.UnixMicro(job.EnqueuedAt)).Seconds())
	}
	var meta streaming.Meta
	err := retry(p.runCtx, "claim job", logger, func(ctx context.Context) (err error) {
		meta, err = p.chunks.Claim(ctx, job.StreamID, p.owner)
		return err
	})
	switch {
	case errors.Is(err, streaming.ErrEnded):
		p.done(t) // cancelled before it started, and ended by the API
		return
	case errors.Is(err, streaming.ErrGone):
		// Its meta expired while it waited: nothing can stream it.
		if err := p.recover(p.finCtx, t); err != nil {
			logger.Error("end expired job", "err", err)
		}
		return
	case err != nil:
		return // shutting down; the job stays for recoverNode
	}
	g := p.newGeneration(job, meta.Epoch)
	if meta.N > 0 || meta.Final != "" {
		// An earlier run sent chunks already. At a tool boundary the answer
		// goes on from the log; elsewhere (mid-text, or the end being
		// written) it ends as that run left it.
		parts, ok, err := p.resumePoint(p.runCtx, job.StreamID, meta)
		if err != nil {
			logger.Error("read the log of a rerun job; it stays for recovery", "err", err)
			return
		}
		if !ok {
			if err := p.endOrphan(p.finCtx, job, meta); err != nil {
				logger.Error("end a rerun job", "err", err)
				return
			}
			p.done(t)
			return
		}
		m, err := p.chunks.Meta(p.runCtx, job.StreamID)
		if err != nil {
			logger.Error("read the meta of a resumed job; it stays for recovery", "err", err)
			return
		}
		logger.Info("resuming an answer at a tool boundary", "chunks", meta.N)
		g.resume(meta.N, parts, m.Usage)
	}
	p.metrics.Active.Inc()
	defer p.metrics.Active.Dec()
	o, ok := g.run(meta.Cancel)
	switch {
	case !ok && g.resumable() && context.Cause(p.runCtx) == errShutdown:
		// Handed back: another worker runs it from the start, or goes on
		// from the tool boundary where it stands.
		p.metrics.Requeued.Inc()
		if err := p.handBack(p.finCtx, t, g.epoch); err != nil {
			logger.Error("hand back job", "err", err)
		}
		return
	case !ok:
		return // fenced: the job is someone else's now
	}
	finish := func(ctx context.Context) error { return p.fin.finish(ctx, job, g.epoch, o, g.n) }
	if o.fromLog {
		finish = func(ctx context.Context) error {
			return p.fin.finishFromLog(ctx, job, g.epoch, o.status, o.failure)
		}
	}
	if err := finish(p.finCtx); err != nil {
		logger.Error("finish generation; a reaper will finish it", "err", err)
		return
	}
	p.done(t)
}

// resumePoint reads the answer an earlier run of a job left in the log, and
// whether a worker can go on from it: the log ends at a tool boundary, and
// no end was marked or cancel asked.
func (p *Pool) resumePoint(ctx context.Context, streamID string, meta streaming.Meta) ([]chatstream.Part, bool, error) {
	if meta.Final != "" || meta.Cancel || meta.N == 0 {
		return nil, false, nil
	}
	parts, n, err := p.chunks.Parts(ctx, streamID)
	if err != nil {
		return nil, false, err
	}
	if n != meta.N || len(parts) == 0 || !atToolBoundary(parts[len(parts)-1].Type) {
		return nil, false, nil
	}
	return parts, true, nil
}

// handBack returns a job this node holds with epoch to the front of the
// queue. The stream is released first, so that a cancel meanwhile ends it at
// once instead of waiting for a worker; should the release fail, the next
// worker to claim the job still sees the cancel.
func (p *Pool) handBack(ctx context.Context, t streaming.Taken, epoch int64) error {
	if err := p.chunks.Release(ctx, t.Job.StreamID, epoch); err != nil && !errors.Is(err, streaming.ErrGone) {
		p.logger.Warn("release handed back job", "stream_id", t.Job.StreamID, "err", err)
	}
	return p.queue.Requeue(ctx, t.Raw)
}

func (p *Pool) done(t streaming.Taken) {
	if err := retry(p.finCtx, "remove finished job", p.logger, func(ctx context.Context) error {
		return p.queue.Done(ctx, t.Raw)
	}); err != nil {
		p.logger.Error("remove finished job", "stream_id", t.Job.StreamID, "err", err)
	}
}
