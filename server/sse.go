package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Server-Sent Events: a stream's frames (GET /v1/streams/:id/events) and a
// conversation's events (GET /v1/conversations/:id/events) for clients that
// cannot hold a WebSocket — behind a proxy that breaks them, or an
// EventSource. An SSE reader is one more follower (or watcher) of the
// node's delivery: the same exactly-once catch-up, the same one pub/sub
// connection, the same bounded queue (a reader that cannot keep up is
// disconnected and resumes by Last-Event-ID).

// SSEConfig tunes the SSE routes. Zero values take the defaults.
type SSEConfig struct {
	// PingInterval is how often an idle response gets a ": ping" comment,
	// which keeps proxies from closing it. Default 15s.
	PingInterval time.Duration
	// Queue is a reader's queue of frames not yet written; a reader whose
	// queue fills is disconnected. Default WS.SendQueue.
	Queue int
}

func (c *SSEConfig) setDefaults(ws wsConfig) {
	if c.PingInterval <= 0 {
		c.PingInterval = 15 * time.Second
	}
	if c.Queue <= 0 {
		c.Queue = ws.SendQueue
	}
}

// sseQueue is an SSE reader's bounded queue: the delivery's Sink on one
// side, the response writer (the handler's goroutine) on the other.
type sseQueue struct {
	mu     sync.Mutex
	frames [][]byte
	max    int
	full   bool          // it overflowed: the reader is disconnected
	wake   chan struct{} // buffered 1: a frame (or the overflow) waits
}

func newSSEQueue(max int) *sseQueue {
	return &sseQueue{max: max, wake: make(chan struct{}, 1)}
}

// Send implements chatstream.Sink.
func (q *sseQueue) Send(frame []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.full {
		return false
	}
	if len(q.frames) >= q.max {
		q.full = true
	} else {
		q.frames = append(q.frames, frame)
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return !q.full
}

// Room implements chatstream.Sink.
func (q *sseQueue) Room() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.full {
		return 0
	}
	return q.max - len(q.frames)
}

// take returns the queued frames, reusing buf, and whether the queue
// overflowed.
func (q *sseQueue) take(buf [][]byte) ([][]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	buf = append(buf[:0], q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	return buf, q.full
}

// lastEventID is where an SSE reader of a stream resumes: the
// Last-Event-ID header (what EventSource sends on reconnect), else the
// last_index parameter, else -1 (from the start).
func lastEventID(r *http.Request) (int64, error) {
	v, field := r.Header.Get("Last-Event-ID"), "Header Last-Event-ID"
	if v == "" {
		v, field = r.URL.Query().Get("last_index"), "Parameter \"last_index\""
	}
	if v == "" {
		return -1, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < -1 || n > maxLastIndex {
		return 0, chatstream.Errorf(chatstream.EINVALID, "%s must be a chunk index from -1 to %d.", field, int64(maxLastIndex))
	}
	return n, nil
}

func (s *Server) handleStreamEvents(c *gin.Context) {
	id := c.Param("stream_id")
	last, err := lastEventID(c.Request)
	if err != nil {
		writeError(c, err)
		return
	}
	if !validID(id) {
		writeError(c, protocol.ErrStreamNotFound)
		return
	}
	user := c.GetString(ctxUser)
	if err := s.gens.Authorize(c, user, id); err != nil {
		writeError(c, err)
		return
	}
	s.serveEvents(c, user, sseEvents{stream: true}, s.followInto(id, last))
}

// followInto starts a follow of stream id from after index last into an
// SSE queue.
func (s *Server) followInto(id string, last int64) func(context.Context, *sseQueue) (func(), error) {
	return func(ctx context.Context, q *sseQueue) (func(), error) {
		fl, err := s.streams.Follow(ctx, id, last, q)
		if err != nil {
			return nil, err
		}
		return fl.Close, nil
	}
}

func (s *Server) handleConversationEvents(c *gin.Context) {
	id := c.Param("id")
	user := c.GetString(ctxUser)
	if _, err := s.store.FindConversation(c, user, id); err != nil {
		writeError(c, err)
		return
	}
	s.serveEvents(c, user, sseEvents{}, func(ctx context.Context, q *sseQueue) (func(), error) {
		return s.watcher.Watch(ctx, id, q)
	})
}

// eventEncoder writes the frames a follow delivers as an event stream.
type eventEncoder interface {
	// headers are the response's headers.
	headers() map[string]string
	// head is what the response starts with.
	head(out []byte) []byte
	// encode appends frame f and reports whether it is the last.
	encode(out, f []byte) ([]byte, bool)
	// ping is the comment that keeps an idle response open.
	ping() []byte
}

// sseEvents encodes our frames as they are, an event each (see the
// contract's "SSE"); a stream's events end with its done, a
// conversation's with its deletion.
type sseEvents struct{ stream bool }

var sseHeaders = map[string]string{
	"Content-Type":      "text/event-stream",
	"Cache-Control":     "no-cache",
	"X-Accel-Buffering": "no", // nginx: do not buffer the response
}

func (sseEvents) headers() map[string]string { return sseHeaders }
func (sseEvents) head(out []byte) []byte     { return append(out, ": ok\n\n"...) }
func (sseEvents) ping() []byte               { return []byte(": ping\n\n") }

func (e sseEvents) encode(out, f []byte) ([]byte, bool) {
	out, typ := appendEvent(out, f)
	return out, endsEvents(e.stream, typ, f)
}

// serveEvents answers with the event stream, as enc writes it, of what
// start has follow: counted as one of the user's sockets, ended by the
// last frame (as enc says), a full queue, the token's expiry, the client
// going away, or the server shutting down.
func (s *Server) serveEvents(c *gin.Context, user string, enc eventEncoder, start func(context.Context, *sseQueue) (stop func(), err error)) {
	release, err := s.limits.AcquireSocket(c, user)
	if err != nil {
		writeError(c, err)
		return
	}
	defer release()
	ctx, cancel := context.WithCancel(c.Request.Context())
	defer cancel()
	q := newSSEQueue(s.cfg.SSE.Queue)
	stop, err := start(ctx, q)
	if err != nil {
		writeError(c, err)
		return
	}
	defer stop()
	s.metrics.sseOpen.Inc()
	defer s.metrics.sseOpen.Dec()

	w := c.Writer
	for k, v := range enc.headers() {
		w.Header().Set(k, v)
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// write writes and flushes b. A write the reader does not take within
	// WriteTimeout ends the response as a full queue does: the reader is
	// slow, and resumes.
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WS.WriteTimeout))
		_, err := w.Write(b)
		if err == nil {
			err = rc.Flush()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.metrics.sseSlow.Inc()
		}
		return err == nil
	}
	if !write(enc.head(nil)) {
		return
	}
	ping := time.NewTicker(s.cfg.SSE.PingInterval)
	defer ping.Stop()
	var expired <-chan time.Time
	if exp, ok := c.Get(ctxTokenExp); ok {
		if t, ok := exp.(time.Time); ok && !t.IsZero() {
			timer := time.NewTimer(time.Until(t))
			defer timer.Stop()
			expired = timer.C
		}
	}
	var frames [][]byte
	var out []byte
	for {
		select {
		case <-q.wake:
		case <-ping.C:
			if !write(enc.ping()) {
				return
			}
			continue
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-expired:
			return // the client reconnects with a fresh token and resumes
		}
		var full bool
		frames, full = q.take(frames)
		out = out[:0]
		end := false
		for _, f := range frames {
			if out, end = enc.encode(out, f); end {
				break
			}
		}
		if full {
			s.metrics.sseSlow.Inc()
		}
		if len(out) > 0 {
			if !write(out) {
				return
			}
			ping.Reset(s.cfg.SSE.PingInterval)
		}
		if end || full {
			return
		}
	}
}

// endsEvents reports whether frame f of type typ is the last of a
// response: a stream's done (or the error that ends its follow), a
// conversation's deletion.
func endsEvents(stream bool, typ string, f []byte) bool {
	if stream {
		return typ == protocol.TypeDone || typ == protocol.TypeError
	}
	return typ == protocol.TypeConversation && bytes.Contains(f, []byte(`"event":"`+protocol.ConversationDeleted+`"`))
}

// appendEvent appends frame f as one event, "event: <type>", "id:
// <index>" on chunks and snapshots, "data: <the frame>", and returns its
// type.
func appendEvent(out, f []byte) ([]byte, string) {
	typ, idx, ok := protocol.Scan(f)
	if !ok {
		typ = "message"
	}
	out = append(out, "event: "...)
	out = append(out, typ...)
	out = append(out, '\n')
	if ok && (typ == protocol.TypeChunk || typ == protocol.TypeSnapshot) {
		out = append(out, "id: "...)
		out = strconv.AppendInt(out, idx, 10)
		out = append(out, '\n')
	}
	for line := range bytes.SplitSeq(f, []byte("\n")) {
		out = append(out, "data: "...)
		out = append(out, line...)
		out = append(out, '\n')
	}
	return append(out, '\n'), typ
}
