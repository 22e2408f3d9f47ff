package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
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
	// WriteCoalesce is how long a socket may hold a frame so that the
	// frames queued after it go out in the same write (one syscall for
	// several: less CPU per delivery, at up to this much latency); a socket
	// whose frames come further apart than this writes each at once. 0, the
	// default, writes every frame at once.
	WriteCoalesce time.Duration
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
	sb := &smallBuffers{ResponseWriter: c.Writer}
	conn, err := websocket.Accept(sb, c.Request, &websocket.AcceptOptions{
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
		cork:    sb.cork,
		user:    c.GetString(ctxUser),
		opened:  time.Now(),
		expires: unixNanoOrZero(expires),
		closed:  make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		follows: make(map[string]Follow),
		watches: make(map[string]func()),
		logger:  s.logger.With("request_id", c.GetString(ctxRequestID), "user", c.GetString(ctxUser)),
	}
	sess.subscribes = bucket{rate: s.cfg.WS.SubscribeRate, burst: float64(s.cfg.WS.SubscribeBurst), tokens: float64(s.cfg.WS.SubscribeBurst)}
	sess.out = outQueue{max: s.cfg.WS.SendQueue, writers: &sess.writers, wake: make(chan struct{}, 1), stamp: s.cfg.WS.WriteCoalesce > 0}
	sess.lastPing.Store(time.Now().UnixNano())
	// When the session stops, for whatever cause, the connection is closed
	// with the status that says why. AfterFunc holds no goroutine meanwhile.
	context.AfterFunc(ctx, func() {
		defer close(sess.closed)
		sess.out.nudge() // a waiting writer ends
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
	sess.logger.Info("websocket opened", "remote", c.ClientIP())
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
