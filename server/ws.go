package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Follow is one stream followed by a socket.
type Follow interface {
	Ended() bool
	Close()
}

// Streams delivers streams to sockets, each chunk exactly once.
type Streams interface {
	Follow(ctx context.Context, streamID string, lastIndex int64, sink chatstream.Sink) (Follow, error)
}

// Watcher delivers the message events of conversations.
type Watcher interface {
	Watch(ctx context.Context, convID string, sink chatstream.Sink) (unwatch func(), err error)
}

// wsConfig tunes the WebSocket endpoint.
type wsConfig struct {
	// ReadLimit is the largest client frame; larger closes the socket 1009.
	// Default ReadLimit(MaxContentBytes).
	ReadLimit int64
	// SendQueue is each socket's outbound queue, in frames; a socket whose
	// queue is full is closed with 1013.
	SendQueue int
	// WriteTimeout bounds one frame write.
	WriteTimeout time.Duration
	// PingInterval is how often the server pings; a peer that does not
	// answer within PingTimeout is dropped.
	PingInterval, PingTimeout time.Duration
	// MaxFollows and MaxWatches bound a socket's subscriptions.
	MaxFollows, MaxWatches int
	// SubscribeRate and SubscribeBurst bound the subscribe and watch frames
	// of a socket (each costs Redis and Postgres reads): SubscribeBurst at
	// once, then SubscribeRate a second. Defaults 10 and 128 (a page that
	// reconnects resubscribes everything it follows at once).
	SubscribeRate  float64
	SubscribeBurst int
	// OriginPatterns are the cross-origin hosts allowed to open sockets;
	// same-origin (and non-browser) clients are always allowed.
	OriginPatterns []string
}

func (c *wsConfig) setDefaults() {
	if c.SendQueue <= 0 {
		c.SendQueue = 512
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 15 * time.Second
	}
	if c.MaxFollows <= 0 {
		c.MaxFollows = 64
	}
	if c.MaxWatches <= 0 {
		c.MaxWatches = 64
	}
	if c.SubscribeRate <= 0 {
		c.SubscribeRate = 10
	}
	if c.SubscribeBurst <= 0 {
		c.SubscribeBurst = 128
	}
}

// Why a socket closes, for its close status.
var (
	errSlowConsumer = errors.New("socket cannot keep up")
	errShuttingDown = errors.New("server shutting down")
	errPeerGone     = errors.New("peer does not answer pings")
	errWriteTimeout = errors.New("a frame write timed out")
	errTokenExpired = errors.New("access token expired")
	errWriterPanic  = errors.New("the socket's writer panicked")
)

// StatusTokenExpired closes a socket whose access token expired; the client
// reconnects with a fresh token and resumes.
const StatusTokenExpired websocket.StatusCode = 4001

// sockets tracks the open sockets, since http.Server.Shutdown neither closes
// nor waits for hijacked connections.
type sockets struct {
	mu       sync.Mutex
	open     map[*session]struct{}
	closing  bool
	watching bool           // the write watchdog runs
	wg       sync.WaitGroup // one per open socket and one for the watchdog
	// writeTimeout is how long one frame write may take; pingInterval how
	// often each socket is pinged.
	writeTimeout, pingInterval time.Duration
}

// addLocked registers an open socket and starts the write watchdog with the
// first one. t.mu is held.
func (t *sockets) addLocked(ss *session) {
	t.open[ss] = struct{}{}
	if !t.watching {
		t.watching = true
		t.wg.Add(1)
		// The watchdog lives while sockets are open.
		go func() { defer t.wg.Done(); t.watchWrites() }()
	}
}

// watchWrites closes sockets whose current write has taken longer than the
// write timeout or whose access token expired, and pings each socket every
// ping interval. One goroutine for
// all sockets replaces a timer per frame (a context deadline on each write
// was a tenth of the writers' CPU) and a ticker per socket.
func (t *sockets) watchWrites() {
	tick := time.NewTicker(min(time.Second, t.writeTimeout/4, t.pingInterval/4))
	defer tick.Stop()
	for range tick.C {
		now := time.Now().UnixNano()
		t.mu.Lock()
		if len(t.open) == 0 {
			t.watching = false
			t.mu.Unlock()
			return
		}
		var stuck, due, expired []*session
		for ss := range t.open {
			if start := ss.writeStart.Load(); start != 0 && time.Duration(now-start) > t.writeTimeout {
				stuck = append(stuck, ss)
			} else if ss.expires > 0 && now >= ss.expires {
				expired = append(expired, ss)
			} else if time.Duration(now-ss.lastPing.Load()) >= t.pingInterval {
				ss.lastPing.Store(now)
				due = append(due, ss)
			}
		}
		t.mu.Unlock()
		for _, ss := range stuck {
			ss.stop(errWriteTimeout)
			ss.conn.CloseNow() // unblocks the write
		}
		for _, ss := range expired {
			ss.stop(errTokenExpired)
		}
		for _, ss := range due {
			ss.ping()
		}
	}
}

// closeAll closes every socket with 1001 and refuses new ones.
func (t *sockets) closeAll() {
	t.mu.Lock()
	t.closing = true
	open := make([]*session, 0, len(t.open))
	for s := range t.open {
		open = append(open, s)
	}
	t.mu.Unlock()
	for _, s := range open {
		s.stop(errShuttingDown)
	}
}

// wait waits until every socket's goroutines ended, or ctx ends.
func (t *sockets) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) handleWS(c *gin.Context) {
	s.sockets.mu.Lock()
	if s.sockets.closing {
		s.sockets.mu.Unlock()
		writeError(c, chatstream.Errorf(chatstream.EUNAVAILABLE, "The server is shutting down."))
		return
	}
	s.sockets.wg.Add(1)
	s.sockets.mu.Unlock()

	release, err := s.limits.AcquireSocket(c, c.GetString(ctxUser))
	if err != nil {
		s.sockets.wg.Done()
		writeError(c, err)
		return
	}
	conn, err := websocket.Accept(smallBuffers{c.Writer}, c.Request, &websocket.AcceptOptions{
		OriginPatterns: s.cfg.WS.OriginPatterns,
	})
	if err != nil {
		// Accept has answered the client already.
		release()
		s.sockets.wg.Done()
		return
	}
	conn.SetReadLimit(s.cfg.WS.ReadLimit)
	// The socket lives on the server's context, not the request's: after
	// the upgrade the request context means nothing.
	ctx, cancel := context.WithCancelCause(context.Background())
	exp, _ := c.Get(ctxTokenExp)
	expires, _ := exp.(time.Time)
	sess := &session{
		srv:     s,
		conn:    conn,
		user:    c.GetString(ctxUser),
		opened:  time.Now(),
		expires: unixNanoOrZero(expires),
		closed:  make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		follows: make(map[string]Follow),
		watches: make(map[string]func()),
		log:     s.log.With("request_id", c.GetString(ctxRequestID), "user", c.GetString(ctxUser)),
	}
	sess.subscribes = bucket{rate: s.cfg.WS.SubscribeRate, burst: float64(s.cfg.WS.SubscribeBurst), tokens: float64(s.cfg.WS.SubscribeBurst)}
	sess.out = outQueue{max: s.cfg.WS.SendQueue, writers: &sess.writers, wake: make(chan struct{}, 1)}
	sess.lastPing.Store(time.Now().UnixNano())
	// When the session stops, for whatever cause, the connection is closed
	// with the status that says why. AfterFunc holds no goroutine meanwhile.
	context.AfterFunc(ctx, func() {
		defer close(sess.closed)
		sess.close(context.Cause(ctx))
	})
	s.sockets.mu.Lock()
	s.sockets.addLocked(sess)
	closing := s.sockets.closing
	s.sockets.mu.Unlock()
	if closing {
		sess.stop(errShuttingDown)
	}
	s.metrics.socketsOpen.Inc()
	sess.log.Info("websocket opened", "remote", c.ClientIP())
	// The socket runs on a goroutine of its own and the handler returns:
	// the connection is hijacked, and the handler's deep stack (net/http,
	// Gin, middleware) would otherwise stay allocated for the socket's life —
	// most of an idle socket's memory. The goroutine lives until the socket
	// closes; sockets.wg tracks it.
	go func() {
		defer s.sockets.wg.Done()
		defer release()
		sess.run()
		s.metrics.socketsOpen.Dec()
		s.sockets.mu.Lock()
		delete(s.sockets.open, sess)
		s.sockets.mu.Unlock()
	}()
}

// session is one WebSocket. Its goroutine reads; one writer goroutine owns
// all writes; Send only queues.
type session struct {
	srv  *Server
	conn *websocket.Conn
	user string
	log  *slog.Logger
	// opened is when the socket opened; expires when its access token
	// expires (Unix ns; 0: never), at which the watchdog closes it.
	opened  time.Time
	expires int64
	// framesIn counts the client's frames (the reader's alone);
	// framesOut the frames written.
	framesIn  int64
	framesOut atomic.Int64
	// subscribes is the reader's token bucket of subscribe and watch frames.
	subscribes bucket

	// out is the outbound queue, at most SendQueue frames; Send never
	// blocks on it, a full queue closes the socket.
	out    outQueue
	ctx    context.Context // ends when the socket is closing
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	follows map[string]Follow
	watches map[string]func()
	pings   sync.WaitGroup // ping goroutines in flight
	writers sync.WaitGroup // the writer goroutine, while it runs
	ended   bool           // guarded by mu: run is winding up, no new ping
	// closed is closed once the connection has been closed (by closeOnStop).
	closed chan struct{}
	// lastPing is when the node's watchdog last pinged the socket (Unix ns).
	lastPing atomic.Int64
	// writeStart is when the current frame write began (Unix ns), 0 between
	// writes; the sockets' watchdog reads it.
	writeStart atomic.Int64
	slow       atomic.Bool // the queue overflowed
}

// Send implements chatstream.Sink.
func (ss *session) Send(frame []byte) bool {
	if ss.ctx.Err() != nil {
		return false
	}
	switch ss.out.push(frame) {
	case pushed:
		return true
	case pushedStart:
		// The writer lives until the queue is empty or the socket closes.
		go func() { defer ss.writers.Done(); ss.writeLoop() }()
		return true
	case queueFull:
		// Counted here, not when the socket is closed: the writer may be
		// stuck in a write to the very client that stopped reading.
		if ss.slow.CompareAndSwap(false, true) {
			ss.srv.metrics.wsErrors.WithLabelValues("slow_consumer").Inc()
		}
		ss.stop(errSlowConsumer)
	}
	return false
}

// Room implements chatstream.Sink.
func (ss *session) Room() int { return ss.out.room() }

// outQueue is a socket's bounded outbound queue. Unlike a buffered channel
// it holds memory only for the frames queued, and its writer goroutine runs
// only while frames come (it lingers writerLinger after the last): an idle
// socket costs neither.
type outQueue struct {
	mu      sync.Mutex
	frames  [][]byte
	max     int
	writing bool            // a writer goroutine runs
	closed  bool            // the socket is closing: nothing more is queued
	writers *sync.WaitGroup // the writer goroutines, for the session to wait on
	// wake tells a lingering writer that frames are queued; buffered 1, so
	// a push never blocks and a wake-up is never lost.
	wake chan struct{}
}

// writerLinger is how long a writer waits for more frames before it ends:
// long enough that a streaming socket keeps one writer, short enough that
// an idle socket soon holds none.
const writerLinger = time.Second

// pushResult says what push did.
type pushResult int

const (
	pushed      pushResult = iota
	pushedStart            // queued; the caller must start the writer
	queueFull
	queueClosed
)

// push queues frame.
func (q *outQueue) push(frame []byte) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return queueClosed
	case len(q.frames) >= q.max:
		return queueFull
	}
	q.frames = append(q.frames, frame)
	if q.writing {
		select {
		case q.wake <- struct{}{}:
		default:
		}
		return pushed
	}
	q.writing = true
	q.writers.Add(1) // under q.mu, so never after the session's Wait
	return pushedStart
}

// take returns every queued frame, reusing buf's storage.
func (q *outQueue) take(buf [][]byte) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	buf = append(buf[:0], q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	if cap(q.frames) > 64 && len(buf) < 16 {
		q.frames = nil // let a burst's storage go once it is over
	}
	return buf
}

// retire ends the writer if nothing is queued: it reports whether the
// writer must return. A push after it starts a new writer.
func (q *outQueue) retire() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) > 0 && !q.closed {
		return false
	}
	q.writing = false
	return true
}

// close refuses further frames and drops the queued ones.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.frames = nil
	q.mu.Unlock()
}

func (q *outQueue) room() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.max - len(q.frames)
}

func (q *outQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames)
}

// stop begins closing the socket for cause; the writer does the closing.
func (ss *session) stop(cause error) { ss.cancel(cause) }

// run serves the socket until it closes, then releases everything it held.
func (ss *session) run() {
	ss.readLoop()
	ss.stop(context.Canceled)
	defer func() {
		ss.log.Info("websocket closed", "reason", closeReason(context.Cause(ss.ctx)),
			"duration_ms", time.Since(ss.opened).Milliseconds(), "frames_in", ss.framesIn, "frames_out", ss.framesOut.Load())
	}()
	ss.out.close()
	<-ss.closed
	ss.writers.Wait()
	ss.mu.Lock()
	ss.ended = true
	follows, watches := ss.follows, ss.watches
	ss.follows, ss.watches = nil, nil
	ss.mu.Unlock()
	ss.pings.Wait()
	for _, f := range follows {
		f.Close()
	}
	for _, unwatch := range watches {
		unwatch()
	}
}

// readLoop reads client frames until the connection closes. It does not
// read with ss.ctx: a read whose context ends closes the connection at once,
// which would cut off the close frame (1013, 1001) the writer is sending.
// The writer closes the connection whenever ss.ctx ends, which ends the read.
func (ss *session) readLoop() {
	for {
		typ, data, err := ss.conn.Read(context.Background())
		if err != nil {
			status := websocket.CloseStatus(err)
			switch {
			case status == websocket.StatusMessageTooBig:
				ss.srv.metrics.wsErrors.WithLabelValues("too_big").Inc()
			case status == -1 && ss.ctx.Err() == nil && !errors.Is(err, context.Canceled):
				ss.log.Debug("websocket read ended", "err", err)
			}
			return
		}
		ss.framesIn++
		if typ != websocket.MessageText {
			ss.sendError(nil, "", protocol.CodeInvalidFrame, "Frames must be text frames holding one JSON object.")
			continue
		}
		ss.handle(data)
	}
}

// writeLoop writes the queued frames; when none has come for writerLinger
// it ends (the next Send starts another), and when the socket stops it ends
// at once (the closing is closeOnStop's, and the close frame goes before
// anything still queued).
func (ss *session) writeLoop() {
	defer func() {
		if v := recover(); v != nil {
			ss.srv.metrics.panics.Inc()
			ss.log.Error("panic in a websocket writer; closing the socket", "panic", v, "stack", string(debug.Stack()))
			ss.stop(errWriterPanic)
			ss.conn.CloseNow()
		}
	}()
	var batch [][]byte
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		if batch = ss.out.take(batch); len(batch) > 0 {
			for i, frame := range batch {
				if ss.ctx.Err() != nil {
					return
				}
				// No deadline of its own: the sockets' watchdog ends a
				// write that takes longer than WriteTimeout.
				ss.writeStart.Store(time.Now().UnixNano())
				err := ss.conn.Write(context.Background(), websocket.MessageText, frame)
				ss.writeStart.Store(0)
				ss.framesOut.Add(1)
				batch[i] = nil
				if err != nil {
					// A write that failed or timed out has closed the
					// connection already; the stop records why.
					ss.stop(err)
					return
				}
			}
			if cap(batch) > 64 {
				batch = nil
			}
			continue
		}
		linger.Reset(writerLinger)
		select {
		case <-ss.out.wake:
		case <-linger.C:
			if ss.out.retire() {
				return
			}
		case <-ss.ctx.Done():
			return
		}
	}
}

// ping pings the socket once from a goroutine of its own, unless the
// session is ending; a peer that does not answer within PingTimeout is
// dropped.
func (ss *session) ping() {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	ss.pings.Add(1)
	ss.mu.Unlock()
	// The ping waits for its pong; it ends within PingTimeout.
	go func() {
		defer ss.pings.Done()
		ctx, cancel := context.WithTimeout(ss.ctx, ss.srv.cfg.WS.PingTimeout)
		defer cancel()
		if err := ss.conn.Ping(ctx); err != nil && ss.ctx.Err() == nil {
			ss.stop(errPeerGone)
		}
	}()
}

// close closes the connection with the status that says why.
func (ss *session) close(cause error) {
	switch {
	case errors.Is(cause, errSlowConsumer):
		ss.log.Info("closing slow socket", "queued", ss.out.len())
		ss.conn.Close(websocket.StatusTryAgainLater, "cannot keep up; resume from your last index")
	case errors.Is(cause, errShuttingDown):
		ss.conn.Close(websocket.StatusGoingAway, "server shutting down")
	case errors.Is(cause, errPeerGone):
		ss.srv.metrics.wsErrors.WithLabelValues("ping_timeout").Inc()
		ss.conn.CloseNow()
	case errors.Is(cause, errWriteTimeout):
		ss.srv.metrics.wsErrors.WithLabelValues("write_timeout").Inc()
		ss.conn.CloseNow()
	case errors.Is(cause, errTokenExpired):
		ss.conn.Close(StatusTokenExpired, "access token expired; reconnect with a fresh token and resume")
	default:
		ss.conn.Close(websocket.StatusNormalClosure, "")
	}
}

// closeReason names why a socket closed, for its log line.
func closeReason(cause error) string {
	switch {
	case errors.Is(cause, errSlowConsumer):
		return "slow_consumer"
	case errors.Is(cause, errShuttingDown):
		return "shutdown"
	case errors.Is(cause, errPeerGone):
		return "ping_timeout"
	case errors.Is(cause, errWriteTimeout):
		return "write_timeout"
	case errors.Is(cause, errTokenExpired):
		return "token_expired"
	case errors.Is(cause, context.Canceled):
		return "client"
	}
	return "write_failed"
}

func unixNanoOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (ss *session) sendJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		ss.log.Warn("encode frame", "err", err)
		return
	}
	ss.Send(b)
}

func (ss *session) sendError(rid protocol.RequestID, streamID, code, message string) {
	ss.sendErrorFrame(protocol.Error{Type: protocol.TypeError, RequestID: rid, StreamID: streamID, Code: code, Message: message})
}

func (ss *session) sendErrorFrame(f protocol.Error) {
	ss.srv.metrics.wsErrors.WithLabelValues(f.Code).Inc()
	ss.sendJSON(f)
}

// sendErr answers err as an error frame: domain errors with their code,
// others as internal (logged, not shown).
func (ss *session) sendErr(rid protocol.RequestID, streamID string, err error) {
	code := chatstream.ErrorCode(err)
	if code == chatstream.EINTERNAL {
		ss.log.Warn("websocket request failed", "err", err)
	}
	f := protocol.Error{Type: protocol.TypeError, RequestID: rid, StreamID: streamID, Code: code, Message: chatstream.ErrorMessage(err)}
	if d := chatstream.RetryAfter(err); d > 0 {
		f.RetryAfter = retryAfterSeconds(d)
	}
	ss.sendErrorFrame(f)
}

// handle serves one client frame. Bad frames get an error frame and change
// nothing; the socket stays open. A panic while serving one is logged and
// answered as an internal error: it takes down neither the socket nor the
// node.
func (ss *session) handle(data []byte) {
	defer func() {
		if v := recover(); v != nil {
			ss.srv.metrics.panics.Inc()
			ss.log.Error("panic serving a websocket frame; the socket stays open", "panic", v, "stack", string(debug.Stack()))
			ss.sendError(nil, "", chatstream.EINTERNAL, "Internal error.")
		}
	}()
	f, err := protocol.DecodeClientFrame(data)
	if err != nil {
		ss.sendError(f.RequestID, "", protocol.CodeInvalidFrame, "The frame is not a JSON object of the expected shape: "+jsonProblem(err)+".")
		return
	}
	rid := f.RequestID
	switch f.Type {
	case protocol.TypeSubscribe:
		ss.subscribe(rid, f)
	case protocol.TypeUnsubscribe:
		ss.unsubscribe(rid, f)
	case protocol.TypeWatch:
		ss.watch(rid, f)
	case protocol.TypeUnwatch:
		ss.unwatch(rid, f)
	case protocol.TypeSend:
		ss.send(rid, f)
	case protocol.TypeCancel:
		ss.cancelStream(rid, f)
	case "":
		ss.sendError(rid, "", protocol.CodeInvalidRequest, "Field \"type\" is required.")
	default:
		ss.sendError(rid, "", protocol.CodeUnknownType, "Unknown frame type \""+truncate(f.Type, 32)+"\".")
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// requireID reads a required id field; false means an error frame was sent.
func (ss *session) requireID(rid protocol.RequestID, field string, v *string) (string, bool) {
	if v == nil || *v == "" {
		ss.sendError(rid, "", chatstream.EINVALID, "Field \""+field+"\" is required.")
		return "", false
	}
	return *v, true
}

// opCtx bounds the work one frame causes.
func (ss *session) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(ss.ctx, 30*time.Second)
}

// maxLastIndex is the largest last_index a client may claim: the largest
// integer a JavaScript client holds exactly. No stream comes near it.
const maxLastIndex = 1<<53 - 1

// allowSubscribe takes a token for a subscribe or watch frame; false means
// a rate_limited error frame was sent.
func (ss *session) allowSubscribe(rid protocol.RequestID, streamID string) bool {
	wait := ss.subscribes.take(time.Now())
	if wait == 0 {
		return true
	}
	ss.sendErrorFrame(protocol.Error{Type: protocol.TypeError, RequestID: rid, StreamID: streamID, Code: chatstream.ERATELIMIT,
		Message: "Too many subscriptions on this socket; slow down.", RetryAfter: retryAfterSeconds(wait)})
	return false
}

func (ss *session) subscribe(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "stream_id", f.StreamID)
	if !ok || !ss.allowSubscribe(rid, id) {
		return
	}
	last := int64(-1)
	if f.LastIndex != nil {
		last = *f.LastIndex
	}
	if last < -1 || last > maxLastIndex {
		ss.sendError(rid, id, chatstream.EINVALID, fmt.Sprintf("Field \"last_index\" must be from -1 to %d.", int64(maxLastIndex)))
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	if !validID(id) {
		ss.sendErr(rid, id, protocol.ErrStreamNotFound)
		return
	}
	if err := ss.srv.gens.Authorize(ctx, ss.user, id); err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ss.follow(ctx, rid, id, last)
}

// follow starts following a stream the user may see, replacing an earlier
// follow of the same stream.
func (ss *session) follow(ctx context.Context, rid protocol.RequestID, id string, last int64) {
	ss.mu.Lock()
	if old := ss.follows[id]; old != nil {
		old.Close()
		delete(ss.follows, id)
	}
	active := 0
	for sid, fl := range ss.follows {
		if fl.Ended() {
			fl.Close()
			delete(ss.follows, sid)
		} else {
			active++
		}
	}
	ss.mu.Unlock()
	if active >= ss.srv.cfg.WS.MaxFollows {
		ss.sendError(rid, id, protocol.CodeTooManySubscriptions, "This socket follows too many streams; unsubscribe some first.")
		return
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeSubscribed, RequestID: rid, StreamID: id})
	fl, err := ss.srv.streams.Follow(ctx, id, last, ss)
	if err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ss.mu.Lock()
	if ss.follows == nil { // the socket closed meanwhile
		ss.mu.Unlock()
		fl.Close()
		return
	}
	ss.follows[id] = fl
	ss.mu.Unlock()
}

func (ss *session) unsubscribe(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "stream_id", f.StreamID)
	if !ok {
		return
	}
	ss.mu.Lock()
	fl := ss.follows[id]
	delete(ss.follows, id)
	ss.mu.Unlock()
	if fl != nil {
		fl.Close()
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeUnsubscribed, RequestID: rid, StreamID: id})
}

func (ss *session) watch(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "conversation_id", f.ConversationID)
	if !ok || !ss.allowSubscribe(rid, "") {
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	if _, err := ss.srv.store.FindConversation(ctx, ss.user, id); err != nil {
		ss.sendErr(rid, "", err)
		return
	}
	ss.mu.Lock()
	_, already := ss.watches[id]
	n := len(ss.watches)
	ss.mu.Unlock()
	if already {
		ss.sendJSON(protocol.Ack{Type: protocol.TypeWatching, RequestID: rid, ConversationID: id})
		return
	}
	if n >= ss.srv.cfg.WS.MaxWatches {
		ss.sendError(rid, "", protocol.CodeTooManySubscriptions, "This socket watches too many conversations; unwatch some first.")
		return
	}
	unwatch, err := ss.srv.watcher.Watch(ctx, id, ss)
	if err != nil {
		ss.sendErr(rid, "", err)
		return
	}
	ss.mu.Lock()
	if ss.watches == nil {
		ss.mu.Unlock()
		unwatch()
		return
	}
	if prev, ok := ss.watches[id]; ok {
		prev()
	}
	ss.watches[id] = unwatch
	ss.mu.Unlock()
	ss.sendJSON(protocol.Ack{Type: protocol.TypeWatching, RequestID: rid, ConversationID: id})
}

func (ss *session) unwatch(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "conversation_id", f.ConversationID)
	if !ok {
		return
	}
	ss.mu.Lock()
	unwatch := ss.watches[id]
	delete(ss.watches, id)
	ss.mu.Unlock()
	if unwatch != nil {
		unwatch()
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeUnwatched, RequestID: rid, ConversationID: id})
}

func (ss *session) send(rid protocol.RequestID, f protocol.ClientFrame) {
	conv, ok := ss.requireID(rid, "conversation_id", f.ConversationID)
	if !ok {
		return
	}
	if f.Content == nil {
		ss.sendError(rid, "", chatstream.EINVALID, "Field \"content\" is required.")
		return
	}
	if err := ss.srv.validateContent(*f.Content); err != nil {
		ss.sendErr(rid, "", err)
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	user, asst, err := ss.srv.gens.Send(ctx, ss.user, conv, *f.Content)
	if err != nil {
		ss.sendErr(rid, "", err)
		return
	}
	ss.sendJSON(protocol.Accepted{Type: protocol.TypeAccepted, RequestID: rid, UserMessage: user, AssistantMessage: asst, StreamID: asst.ID})
	ss.follow(ctx, nil, asst.ID, -1)
}

func (ss *session) cancelStream(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "stream_id", f.StreamID)
	if !ok {
		return
	}
	if !validID(id) {
		ss.sendErr(rid, id, protocol.ErrStreamNotFound)
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	if err := ss.srv.gens.Cancel(ctx, ss.user, id); err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeCancelling, RequestID: rid, StreamID: id})
}
