// Package loadgen is chatstream's load generator: it opens sockets, starts
// generations on the demo model, follows them and measures what a client
// sees — time to first chunk, delivery latency per chunk, throughput, and
// chunks lost or duplicated (which must be zero) — together with the CPU and
// memory the server and Redis spent, when they run on this machine.
//
// It sends traffic only to the base URL it is given, every run is bounded in
// time, and it stops by itself.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/protocol"
)

// Scenarios.
const (
	Steady = "steady" // many generations, a few followers each
	FanOut = "fanout" // few generations, many followers each
	Idle   = "idle"   // connected sockets following nothing
	Storm  = "storm"  // every follower of a running stream drops and resumes at once
	Churn  = "churn"  // sockets connect, follow a while and leave, continuously
	Tools  = "tools"  // as steady, each answer reasoning first, then a tool call, its result and the text
	// Soak (soak.go): steady load with churn, cancels, resumes and bad
	// frames for the whole run, with the server's resources sampled.
)

// Config describes one run.
type Config struct {
	// BaseURL is the server, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Secret signs access tokens (AUTH_SECRET); empty uses the server's
	// dev-token endpoint (AUTH_DEV=true).
	Secret   []byte
	Scenario string
	// Streams is the number of generations; Followers the sockets that
	// follow each (the sending socket counts as one).
	Streams, Followers int
	// Tokens per generation and their pace (tokens/s) on the demo model.
	Tokens int
	Rate   float64
	// Think is the words of reasoning before each answer of the tools
	// scenario (default 20).
	Think int
	// Sockets is the number of sockets of the idle and churn scenarios.
	Sockets int
	// Duration bounds the run (and sets the length of churn).
	Duration time.Duration
	// Ramp spreads the start of the generations over this time.
	Ramp time.Duration
	// DialConcurrency bounds the sockets being opened at once.
	DialConcurrency int
	// Spread spreads client source addresses over 127.0.0.0/8.
	Spread bool
	// SSE makes the followers other than the sender read over Server-Sent
	// Events instead of WebSockets (steady, fanout, tools).
	SSE bool
	// Users is the number of distinct users the generations belong to.
	Users int
	// Probe measures the server and Redis processes; nil measures nothing.
	Probe *Probe
	// Progress receives a line per second; nil for none.
	Progress io.Writer
}

func (c *Config) setDefaults() {
	if c.Scenario == "" {
		c.Scenario = Steady
	}
	if c.Streams <= 0 {
		c.Streams = 10
	}
	if c.Followers <= 0 {
		c.Followers = 2
	}
	if c.Tokens <= 0 {
		c.Tokens = 200
	}
	if c.Rate <= 0 {
		c.Rate = 30
	}
	if c.Sockets <= 0 {
		c.Sockets = 1000
	}
	if c.Duration <= 0 {
		c.Duration = 60 * time.Second
	}
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = 128
	}
	if c.Users <= 0 {
		c.Users = 50
	}
	if c.Think <= 0 {
		c.Think = 20
	}
}

// run is the state of one run.
type run struct {
	cfg    Config
	dial   *dialer
	http   *http.Client
	tokens sync.Map // user → token

	sockets   atomic.Int64 // open
	opened    atomic.Int64
	sockErrs  atomic.Int64
	chunks    atomic.Int64 // chunk frames received
	lost      atomic.Int64
	dups      atomic.Int64
	snapshots atomic.Int64
	dones     atomic.Int64
	started   atomic.Int64 // generations started

	mu        sync.Mutex
	latencies []int32 // delivery latency per chunk, µs
	ttfb      []int32 // send → first chunk, µs
	catchUp   []int32 // resume → caught up, µs
	errSample []string
}

func (r *run) noteErr(err error) {
	r.sockErrs.Add(1)
	r.mu.Lock()
	if len(r.errSample) < 5 {
		r.errSample = append(r.errSample, err.Error())
	}
	r.mu.Unlock()
}

// token returns an access token for user.
func (r *run) token(ctx context.Context, user string) (string, error) {
	if t, ok := r.tokens.Load(user); ok {
		return t.(string), nil
	}
	var tok string
	if len(r.cfg.Secret) > 0 {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
			Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(24 * time.Hour)),
		}).SignedString(r.cfg.Secret)
		if err != nil {
			return "", err
		}
		tok = s
	} else {
		var out struct{ Token string }
		if err := r.call(ctx, "POST", "/v1/auth/dev-token", "", map[string]string{"user": user}, &out); err != nil {
			return "", fmt.Errorf("dev token (is AUTH_DEV=true? else pass -secret): %w", err)
		}
		tok = out.Token
	}
	r.tokens.Store(user, tok)
	return tok, nil
}

// call makes one JSON HTTP request.
func (r *run) call(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(r.cfg.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// follower tracks what one socket received of one stream.
type follower struct {
	next int64 // next index expected
	// since is when this socket asked for the stream (Unix µs); only chunks
	// published after it count toward delivery latency — older ones come
	// from history by design.
	since    int64
	live     bool // a chunk published after since arrived: caught up
	done     bool
	firstAt  time.Time
	sentAt   time.Time // when the generation was asked for (ttfb), if this socket sent it
	resumeAt time.Time // when a resume was sent; cleared once caught up
	lat      []int32
}

// onChunk accounts chunk idx, frame b, received at now.
func (r *run) onChunk(f *follower, idx int64, b []byte, now time.Time) {
	r.chunks.Add(1)
	ts, hasTS := protocol.ChunkTS(b)
	if hasTS && ts >= f.since {
		f.lat = append(f.lat, int32(min(now.UnixMicro()-ts, 1<<31-1)))
		f.live = true
	}
	switch {
	case idx == f.next:
		f.next++
	case idx < f.next:
		r.dups.Add(1)
	default:
		r.lost.Add(idx - f.next)
		f.next = idx + 1
	}
	if f.firstAt.IsZero() {
		f.firstAt = now
		if !f.sentAt.IsZero() {
			r.mu.Lock()
			r.ttfb = append(r.ttfb, int32(now.Sub(f.sentAt).Microseconds()))
			r.mu.Unlock()
		}
	}
	if !f.resumeAt.IsZero() {
		if hasTS && ts >= f.resumeAt.UnixMicro() {
			// A chunk published after the resume: this socket is live again.
			r.mu.Lock()
			r.catchUp = append(r.catchUp, int32(now.Sub(f.resumeAt).Microseconds()))
			r.mu.Unlock()
			f.resumeAt = time.Time{}
		}
	}
}

// onDone accounts the done frame of a stream whose last index is last.
func (r *run) onDone(f *follower, last int64) {
	if f.next <= last {
		r.lost.Add(last + 1 - f.next)
		f.next = last + 1
	}
	f.done = true
	r.dones.Add(1)
}

// flush merges a follower's samples into the run.
func (r *run) flush(f *follower) {
	r.mu.Lock()
	r.latencies = append(r.latencies, f.lat...)
	r.mu.Unlock()
	f.lat = nil
}

// socket is one client socket following streams.
type socket struct {
	r    *run
	conn *websocket.Conn
	mu   sync.Mutex
	fs   map[string]*follower
	// accepted receives the stream id of this socket's send; buffered 1.
	accepted chan string
	closed   atomic.Bool
	// sentAt is when this socket last sent a send frame, Unix µs.
	sentAt atomic.Int64
	// expectErrors counts the bad frames sent whose error frame has not
	// come yet; answeredErrors the error frames that answered one.
	expectErrors, answeredErrors atomic.Int64
}

func (r *run) open(ctx context.Context, user string) (*socket, error) {
	tok, err := r.token(ctx, user)
	if err != nil {
		return nil, err
	}
	conn, err := r.dial.dial(ctx, tok)
	if err != nil {
		return nil, err
	}
	r.sockets.Add(1)
	r.opened.Add(1)
	return &socket{r: r, conn: conn, fs: map[string]*follower{}, accepted: make(chan string, 1)}, nil
}

// readLoop reads frames until the socket closes or ctx ends; onEnd is called
// when a followed stream is done.
func (s *socket) readLoop(ctx context.Context, onEnd func(id string)) {
	defer s.r.sockets.Add(-1)
	// Reads take no context and reuse one buffer: a context per read costs
	// an AfterFunc registration, and conn.Read a fresh slice per frame —
	// together a fifth of the load generator's CPU. The context closes the
	// socket once instead.
	stop := context.AfterFunc(ctx, func() { s.conn.CloseNow() })
	defer stop()
	var buf []byte
	for {
		b, err := readFrame(s.conn, buf[:0])
		buf = b
		if err != nil {
			if !s.closed.Load() && ctx.Err() == nil && websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				s.r.noteErr(err)
			}
			return
		}
		now := time.Now()
		// A byte scan, not a JSON decode, per frame: the load generator
		// measures the server, not itself.
		typ, idx, ok := protocol.Scan(b)
		if !ok {
			continue
		}
		switch typ {
		case protocol.TypeChunk:
			s.mu.Lock()
			if f := s.fs[string(protocol.StreamID(b))]; f != nil && !f.done {
				s.r.onChunk(f, idx, b, now)
			}
			s.mu.Unlock()
		case protocol.TypeDone:
			id := string(protocol.StreamID(b))
			s.mu.Lock()
			f := s.fs[id]
			if f != nil && !f.done {
				s.r.onDone(f, idx)
				s.r.flush(f)
			}
			s.mu.Unlock()
			if f != nil && onEnd != nil {
				onEnd(id)
			}
		case protocol.TypeSnapshot:
			s.r.snapshots.Add(1)
			s.mu.Lock()
			if f := s.fs[string(protocol.StreamID(b))]; f != nil {
				f.next = idx + 1
			}
			s.mu.Unlock()
		case "accepted":
			var a struct {
				StreamID string `json:"stream_id"`
			}
			if json.Unmarshal(b, &a) == nil {
				// Registered here, before the next frame is read: the
				// stream's chunks follow right behind this frame.
				s.mu.Lock()
				if s.fs[a.StreamID] == nil {
					sent := s.sentAt.Load()
					s.fs[a.StreamID] = &follower{sentAt: time.UnixMicro(sent), since: sent}
				}
				s.mu.Unlock()
				select {
				case s.accepted <- a.StreamID:
				default:
				}
			}
		case "error":
			if s.expectErrors.Add(-1) >= 0 {
				s.answeredErrors.Add(1) // the answer to a bad frame sent on purpose
			} else {
				s.expectErrors.Add(1)
				s.r.noteErr(errors.New(string(b)))
			}
		}
	}
}

// follow registers interest in stream id from index last+1 and subscribes.
func (s *socket) follow(ctx context.Context, id string, last int64) error {
	s.mu.Lock()
	f := s.fs[id]
	if f == nil {
		f = &follower{next: last + 1, since: time.Now().UnixMicro()}
		s.fs[id] = f
	}
	s.mu.Unlock()
	return writeJSON(ctx, s.conn, map[string]any{"type": "subscribe", "stream_id": id, "last_index": last})
}

func (s *socket) close() {
	s.closed.Store(true)
	s.conn.Close(websocket.StatusNormalClosure, "")
}

// generate starts a generation from socket s in a new conversation of user
// and returns its stream id once accepted.
func (r *run) generate(ctx context.Context, s *socket, user string) (string, error) {
	tok, err := r.token(ctx, user)
	if err != nil {
		return "", err
	}
	var conv struct{ ID string }
	if err := r.call(ctx, "POST", "/v1/conversations", tok, map[string]string{"title": "load"}, &conv); err != nil {
		return "", err
	}
	opts := ""
	if r.cfg.Scenario == Tools {
		// The demo model thinks, calls its calculator, then answers.
		opts = fmt.Sprintf(" think=%d tool=calculator", r.cfg.Think)
	}
	content := fmt.Sprintf("/demo tokens=%d rate=%g%s\nload test %s: what is 6 * 7?", r.cfg.Tokens, r.cfg.Rate, opts, conv.ID[:8])
	s.sentAt.Store(time.Now().UnixMicro())
	if err := writeJSON(ctx, s.conn, map[string]any{"type": "send", "conversation_id": conv.ID, "content": content}); err != nil {
		return "", err
	}
	select {
	case id := <-s.accepted:
		r.started.Add(1)
		return id, nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(30 * time.Second):
		return "", errors.New("no accepted frame within 30s")
	}
}
