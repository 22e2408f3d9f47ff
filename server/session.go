package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// session is one WebSocket. Its goroutine reads; Send queues frames for
// the writer goroutine, which runs while frames come; SendLive writes a
// live frame itself when the socket is not busy.
type session struct {
	srv  *Server
	conn *websocket.Conn
	// cork collects a batch's frames into one write (nil: writes pass).
	cork   *corkWriter
	user   string
	logger *slog.Logger
	// opened is when the socket opened; expires when its access token
	// expires (Unix ns; 0: never), at which the watchdog closes it.
	opened  time.Time
	expires int64
	// framesIn counts the client's frames (the reader's alone);
	// framesOut the frames written.
	framesIn  int64
	framesOut atomic.Int64
	// writerStarts counts the writer goroutines started: a socket whose
	// frames all go out from SendLive needs none.
	writerStarts atomic.Int64
	// framesLive counts the frames SendLive wrote itself.
	framesLive atomic.Int64
	// subscribes is the reader's token bucket of subscribe and watch frames.
	subscribes bucket

	// out is the outbound queue, at most SendQueue frames; Send never
	// blocks on it, a full queue closes the socket.
	out    outQueue
	ctx    context.Context // ends when the socket is closing
	cancel context.CancelCauseFunc
	// stopped is set by stop before ctx ends: Send's check (ctx.Err, an
	// interface call and an atomic.Value, was 2 % of the CPU per delivery).
	stopped atomic.Bool

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
	if ss.stopped.Load() {
		return false
	}
	return ss.queued(ss.out.push(frame))
}

// queued finishes a push: it starts the writer when the push asks for it,
// and closes a socket whose queue overflowed.
func (ss *session) queued(r pushResult) bool {
	switch r {
	case pushed:
		return true
	case pushedStart:
		ss.startWriter()
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

// SendLive implements chatstream.LiveSink: a live frame to a socket that is
// not busy is written at once, on the caller's goroutine, without blocking
// — no writer goroutine woken per frame (the wake-up and the writer's
// round were a tenth of the server's CPU on the fan-out rows). Otherwise,
// or when the write cannot go out at once, it is queued as Send does, and
// what a write left of its frame is written by the writer.
func (ss *session) SendLive(frame []byte) bool {
	if ss.stopped.Load() {
		return false
	}
	if ss.cork == nil || !ss.out.claim() {
		return ss.queued(ss.out.push(frame))
	}
	taken, rest, err := ss.cork.tryText(frame)
	if err != nil {
		ss.out.release(false)
		ss.stop(err)
		return false
	}
	ok := true
	if taken {
		ss.framesOut.Add(1)
		ss.framesLive.Add(1)
	} else {
		ok = ss.queued(ss.out.push(frame))
	}
	if ss.out.release(rest) {
		ss.startWriter()
	}
	return ok
}

// startWriter starts the writer goroutine; it lives while frames come (see
// writeLoop) or until the socket closes.
func (ss *session) startWriter() {
	ss.writerStarts.Add(1)
	go func() { defer ss.writers.Done(); ss.writeLoop() }()
}

// Room implements chatstream.Sink.
func (ss *session) Room() int { return ss.out.room() }

// stop begins closing the socket for cause; the writer does the closing.
func (ss *session) stop(cause error) {
	ss.stopped.Store(true)
	ss.cancel(cause)
}

// run serves the socket until it closes, then releases everything it held.
func (ss *session) run() {
	ss.readLoop()
	ss.stop(context.Canceled)
	defer func() {
		ss.logger.Info("websocket closed", "reason", closeReason(context.Cause(ss.ctx)),
			"duration_ms", time.Since(ss.opened).Milliseconds(), "frames_in", ss.framesIn, "frames_out", ss.framesOut.Load(), "frames_live", ss.framesLive.Load(), "writer_starts", ss.writerStarts.Load())
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
				ss.logger.Debug("websocket read ended", "err", err)
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

// writeLoop writes the queued frames; when none has come for a writerLinger period
// it ends (the next Send starts another), and when the socket stops it ends
// at once (the closing is closeOnStop's, and the close frame goes before
// anything still queued).
func (ss *session) writeLoop() {
	defer func() {
		if v := recover(); v != nil {
			ss.srv.metrics.panics.Inc()
			ss.logger.Error("panic in a websocket writer; closing the socket", "panic", v, "stack", string(debug.Stack()))
			ss.stop(errWriterPanic)
			ss.conn.CloseNow()
		}
	}()
	var batch [][]byte
	// The writer waits on the queue's wake channel alone (the cheapest
	// wait there is: no select over several channels, no timer reset per
	// frame); the session's end and the linger timer nudge it too. The timer
	// is re-armed once a period, not per frame: the writer ends after one to
	// two writerLinger periods without a frame.
	var lingered atomic.Bool
	linger := time.AfterFunc(writerLinger, func() { lingered.Store(true); ss.out.nudge() })
	defer linger.Stop()
	written, seen := 0, 0
	coalesce := ss.srv.cfg.WS.WriteCoalesce
	var hold *time.Timer
	if coalesce > 0 {
		hold = time.NewTimer(coalesce)
		defer hold.Stop()
	}
	for {
		if coalesce > 0 {
			// Frames wait up to WriteCoalesce for more to share their write.
			if wait := ss.out.holdFor(coalesce); wait > 0 {
				hold.Reset(wait)
				select {
				case <-hold.C:
				case <-ss.ctx.Done():
					return
				}
			}
		}
		var rest bool
		if batch, rest = ss.out.take(batch); rest || len(batch) > 0 {
			// What SendLive's write left of its frame goes first.
			if rest && !ss.flushRest() {
				return
			}
			if len(batch) > 0 && !ss.writeBatch(batch) {
				return
			}
			written++
			if cap(batch) > 64 {
				batch = nil
			}
			continue
		}
		if ss.ctx.Err() != nil {
			return
		}
		if lingered.Swap(false) {
			if written == seen && ss.out.retire() {
				return
			}
			seen = written
			linger.Reset(writerLinger)
		}
		<-ss.out.wake
	}
}

// flushRest writes what SendLive's write left of its frame; false means
// the session ends.
func (ss *session) flushRest() bool {
	ss.writeStart.Store(time.Now().UnixNano())
	err := ss.cork.flushRest()
	ss.writeStart.Store(0)
	if err != nil {
		ss.stop(err)
		return false
	}
	return true
}

// writeBatch writes the frames of batch in order, clearing them; false
// means the session ends (the cause is recorded). A batch of several goes
// out corked, in one write (see corkWriter); the cork is off again on
// every return, so that what follows (a close frame) is written at once.
func (ss *session) writeBatch(batch [][]byte) (ok bool) {
	if ss.cork != nil && len(batch) > 1 {
		ss.cork.cork()
		defer func() {
			// The batch's frames go out in one write, watched as one
			// frame's would be.
			ss.writeStart.Store(time.Now().UnixNano())
			err := ss.cork.uncork()
			ss.writeStart.Store(0)
			if err != nil && ok {
				ss.stop(err)
				ok = false
			}
		}()
	}
	for i, frame := range batch {
		if ss.ctx.Err() != nil {
			return false
		}
		// No deadline of its own: the sockets' watchdog ends a write that
		// takes longer than WriteTimeout.
		ss.writeStart.Store(time.Now().UnixNano())
		var err error
		if ss.cork != nil {
			err = ss.cork.writeText(frame) // framed once here, see corkWriter
		} else {
			err = ss.conn.Write(context.Background(), websocket.MessageText, frame)
		}
		ss.writeStart.Store(0)
		ss.framesOut.Add(1)
		batch[i] = nil
		if err != nil {
			// A write that failed or timed out has closed the connection
			// already; the stop records why.
			ss.stop(err)
			return false
		}
	}
	return true
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
		ss.logger.Info("closing slow socket", "queued", ss.out.len())
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
		ss.logger.Warn("encode frame", "err", err)
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
		ss.logger.Warn("websocket request failed", "err", err)
	}
	f := protocol.Error{Type: protocol.TypeError, RequestID: rid, StreamID: streamID, Code: code, Message: chatstream.ErrorMessage(err)}
	if d := chatstream.RetryAfter(err); d > 0 {
		f.RetryAfter = retryAfterSeconds(d)
	}
	ss.sendErrorFrame(f)
}
