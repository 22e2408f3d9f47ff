// Command peer-driver measures Centrifugo (the issue's "mature Go peer with a
// Redis engine") on chatstream's fan-out rows, the way chatstream's load
// generator measures chatstream: it opens streams × followers WebSocket
// connections to a running Centrifugo (JSON protocol, by hand), subscribes
// each to its stream's channel, publishes every stream's messages at the
// row's rate through Centrifugo's HTTP server API, and counts what the
// followers receive — deliveries, lost and duplicated per stream, publish →
// receipt latency — while it reads the CPU time of Centrifugo and Redis from
// /proc. It starts nothing: bench/peer/run.sh starts Centrifugo, pins it and
// runs this.
//
// The report mirrors the line names of `chatstream loadgen`'s report, so that
// the same greps work on both ("deliveries per CPU-second (server+redis)": the
// chunks received by all followers divided by the CPU seconds the server
// process and Redis spent over the whole run, connecting included).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/loadgen"
)

type config struct {
	baseURL   string
	apiKey    string
	secret    string
	streams   int
	followers int
	messages  int
	rate      float64
	serverPID int
	redisPID  int
	redisURL  string
	duration  time.Duration
	dialConc  int
	users     int
	prefix    string
	peer      string
	seed      uint64
	progress  bool
}

func main() {
	var c config
	flag.StringVar(&c.baseURL, "url", "http://127.0.0.1:18200", "Centrifugo's base URL (WebSocket at /connection/websocket, API at /api)")
	flag.StringVar(&c.apiKey, "api-key", "", "Centrifugo's http_api.key")
	flag.StringVar(&c.secret, "secret", "", "Centrifugo's client.token.hmac_secret_key (HS256 connection tokens)")
	flag.IntVar(&c.streams, "streams", 20, "streams (one channel each)")
	flag.IntVar(&c.followers, "followers", 50, "connections subscribed to each stream")
	flag.IntVar(&c.messages, "messages", 400, "messages (chunks) per stream")
	flag.Float64Var(&c.rate, "rate", 30, "messages per second per stream")
	flag.IntVar(&c.serverPID, "server-pid", 0, "pid of Centrifugo (CPU and RSS from /proc)")
	flag.IntVar(&c.redisPID, "redis-pid", 0, "pid of redis-server (CPU from /proc)")
	flag.StringVar(&c.redisURL, "redis-url", "", "Redis URL for INFO command counts (optional)")
	flag.DurationVar(&c.duration, "duration", 120*time.Second, "bound on the whole run")
	flag.IntVar(&c.dialConc, "dial-concurrency", 128, "connections being opened at once")
	flag.IntVar(&c.users, "users", 50, "distinct users (token subjects) the connections belong to")
	flag.StringVar(&c.prefix, "channel-prefix", "", "channel name prefix (default: bench<pid>-)")
	flag.StringVar(&c.peer, "peer", "centrifugo", "what the peer is, for the report")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of each stream's phase and words")
	flag.BoolVar(&c.progress, "progress", true, "print a progress line per second on stderr")
	flag.Parse()
	if c.prefix == "" {
		c.prefix = fmt.Sprintf("bench%d-", os.Getpid())
	}
	rep, err := run(c)
	if rep != nil {
		rep.print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer-driver:", err)
		os.Exit(1)
	}
	if rep.lost > 0 || rep.dups > 0 {
		os.Exit(1)
	}
}

// --- the run ----------------------------------------------------------------

type report struct {
	cfg                    config
	payloadMin, payloadMax int
	sockets                int64
	seconds                float64
	publishSeconds         float64
	generations            int64
	published              int64
	publishErrors          int64
	chunks                 int64
	dones                  int64
	lost, dups             int64
	sockErrs               int64
	errSample              []string
	delivery               loadgen.Dist
	publishCall            loadgen.Dist
	// whole is the run's, measured as chatstream's loadgen measures it;
	// pubPhase the publishing phase's CPU alone.
	whole, pubPhase loadgen.ProbeResult
}

type state struct {
	cfg      config
	chunks   atomic.Int64
	dones    atomic.Int64
	lost     atomic.Int64
	dups     atomic.Int64
	sockErrs atomic.Int64
	open     atomic.Int64
	opened   atomic.Int64
	subbed   atomic.Int64
	pubs     atomic.Int64
	pubErrs  atomic.Int64

	mu        sync.Mutex
	latencies []int32 // publish → receipt, µs
	pubCalls  []int32 // HTTP publish call, µs
	errSample []string
}

func (s *state) noteErr(err error) {
	s.sockErrs.Add(1)
	s.mu.Lock()
	if len(s.errSample) < 5 {
		s.errSample = append(s.errSample, err.Error())
	}
	s.mu.Unlock()
}

func run(c config) (*report, error) {
	need := c.streams*c.followers + c.streams + 1024
	if err := loadgen.RaiseFileLimit(uint64(need)); err != nil {
		fmt.Fprintf(os.Stderr, "warning: %v\n", err)
	}
	wsURL, err := websocketURL(c.baseURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.duration)
	defer cancel()
	st := &state{cfg: c}
	rep := &report{cfg: c}

	tokens := make([]string, c.users)
	for i := range tokens {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
			Subject: fmt.Sprintf("load-%d", i), ExpiresAt: jwt.NewNumericDate(time.Now().Add(24 * time.Hour)),
		}).SignedString([]byte(c.secret))
		if err != nil {
			return nil, err
		}
		tokens[i] = tok
	}
	ids := make([]string, c.streams)
	for i := range ids {
		ids[i] = newUUID()
	}

	// The probe covers the whole run, connecting included, as chatstream's
	// loadgen does (it is the loadgen's probe); the publish phase is
	// reported beside it.
	probe, err := loadgen.NewProbe(c.serverPID, c.redisURL, "")
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	if c.redisPID != 0 {
		probe.RedisPID = c.redisPID
	}
	rep.cfg.redisPID = probe.RedisPID
	phase := &loadgen.Probe{ServerPID: probe.ServerPID, RedisPID: probe.RedisPID}
	probe.Start()
	start := time.Now()
	stopProgress := make(chan struct{})
	var progWG sync.WaitGroup
	if c.progress {
		progWG.Go(func() { st.printProgress(start, stopProgress) })
	}

	// Connect and subscribe everyone.
	total := c.streams * c.followers
	conns := make([]*follower, total)
	lim := make(chan struct{}, c.dialConc)
	dialer := &http.Client{Transport: &http.Transport{
		DialContext:       (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		DisableKeepAlives: true,
	}}
	var readers sync.WaitGroup
	var openWG sync.WaitGroup
	var allDone sync.WaitGroup
	allDone.Add(total)
	for i := range total {
		stream := i % c.streams
		openWG.Go(func() {
			lim <- struct{}{}
			f, err := st.openFollower(ctx, dialer, wsURL, tokens[i%c.users], c.prefix+"s"+strconv.Itoa(stream), int64(c.messages-1))
			<-lim
			if err != nil {
				if ctx.Err() == nil {
					st.noteErr(err)
				}
				allDone.Done()
				return
			}
			conns[i] = f
			readers.Go(func() { f.readLoop(ctx, &allDone) })
		})
	}
	openWG.Wait()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("connecting did not finish within %s: %d of %d subscribed", c.duration, st.subbed.Load(), total)
	}
	if n := st.subbed.Load(); n < int64(total) {
		fmt.Fprintf(os.Stderr, "warning: only %d of %d connections subscribed\n", n, total)
	}

	// Publish: each stream its messages at the row's rate, from a phase of
	// its own within the first interval (chatstream's streams start as their
	// senders' sends are accepted, not in lock step).
	pubStart := time.Now()
	phase.Start()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        c.streams + 16,
		MaxIdleConnsPerHost: c.streams + 16,
		IdleConnTimeout:     time.Minute,
	}}
	apiURL := strings.TrimRight(c.baseURL, "/") + "/api/publish"
	every := time.Duration(float64(time.Second) / c.rate)
	rep.payloadMin = math.MaxInt
	var sizeMu sync.Mutex
	var pubWG sync.WaitGroup
	for i := range c.streams {
		pubWG.Go(func() {
			rng := mrand.New(mrand.NewPCG(c.seed, uint64(i)))
			t0 := pubStart.Add(time.Duration(rng.Int64N(int64(every))))
			ch := c.prefix + "s" + strconv.Itoa(i)
			body := make([]byte, 0, 512)
			lats := make([]int32, 0, c.messages)
			lo, hi := math.MaxInt, 0
			for n := range c.messages + 1 {
				at := t0.Add(time.Duration(n) * every)
				if d := time.Until(at); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				if ctx.Err() != nil {
					return
				}
				now := time.Now()
				body = append(body[:0], `{"channel":"`...)
				body = append(body, ch...)
				body = append(body, `","data":`...)
				p0 := len(body)
				if n < c.messages {
					body = appendChunk(body, ids[i], n, words[rng.IntN(len(words))], now)
					lo, hi = min(lo, len(body)-p0), max(hi, len(body)-p0)
				} else {
					body = appendDone(body, ids[i], c.messages-1)
				}
				body = append(body, '}')
				if err := st.publish(ctx, hc, apiURL, c.apiKey, body); err != nil {
					if ctx.Err() == nil {
						st.pubErrs.Add(1)
						st.noteErr(fmt.Errorf("publish: %w", err))
					}
					continue
				}
				lats = append(lats, int32(time.Since(now).Microseconds()))
				st.pubs.Add(1)
			}
			st.mu.Lock()
			st.pubCalls = append(st.pubCalls, lats...)
			st.mu.Unlock()
			sizeMu.Lock()
			rep.payloadMin, rep.payloadMax = min(rep.payloadMin, lo), max(rep.payloadMax, hi)
			sizeMu.Unlock()
		})
	}
	pubWG.Wait()
	rep.generations = int64(c.streams)

	// Wait for every follower's done, then close them all (the closing is
	// part of the run, as in chatstream's loadgen).
	doneCh := make(chan struct{})
	go func() { allDone.Wait(); close(doneCh) }()
	var runErr error
	select {
	case <-doneCh:
	case <-ctx.Done():
		runErr = fmt.Errorf("run ended by its time limit with %d of %d followers done", st.dones.Load(), total)
	}
	pubEnd := time.Now()
	rep.pubPhase = phase.Stop()
	var closeWG sync.WaitGroup
	for _, f := range conns {
		if f == nil {
			continue
		}
		closeWG.Go(func() {
			lim <- struct{}{}
			defer func() { <-lim }()
			f.closed.Store(true)
			f.conn.Close(websocket.StatusNormalClosure, "")
		})
	}
	closeWG.Wait()
	cancel()
	readers.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	progWG.Wait()
	rep.whole = probe.Stop()

	rep.sockets = st.opened.Load()
	rep.seconds = elapsed.Seconds()
	rep.publishSeconds = pubEnd.Sub(pubStart).Seconds()
	rep.published = st.pubs.Load()
	rep.publishErrors = st.pubErrs.Load()
	rep.chunks = st.chunks.Load()
	rep.dones = st.dones.Load()
	rep.lost = st.lost.Load()
	rep.dups = st.dups.Load()
	rep.sockErrs = st.sockErrs.Load()
	rep.errSample = st.errSample
	rep.delivery = loadgen.DistOf(st.latencies)
	rep.publishCall = loadgen.DistOf(st.pubCalls)
	if rep.payloadMin == math.MaxInt {
		rep.payloadMin = 0
	}
	return rep, runErr
}

// publish posts one publish request and checks its answer.
func (s *state) publish(ctx context.Context, hc *http.Client, apiURL, key string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", apiURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%d %s", res.StatusCode, bytes.TrimSpace(b))
	}
	if bytes.Contains(b, []byte(`"error"`)) {
		return errors.New(string(bytes.TrimSpace(b)))
	}
	return nil
}

// --- the payload ------------------------------------------------------------

// words are the deltas of a demo answer.
var words = strings.Fields(`Streaming an answer as it is written means the server sends each piece
of text the moment the model produces it, so the reader sees the first words
within a fraction of a second instead of waiting for the whole reply; every
chunk carries its index, and a client that reconnects resumes from the last
index it holds`)

// appendChunk appends a chunk frame like chatstream's with a text part:
// {"type":"chunk","stream_id":…,"index":N,"ts":"<RFC 3339, µs>","part":{"type":"text","text":" word"}}.
// ts is the send time the followers measure latency from.
func appendChunk(dst []byte, id string, index int, word string, now time.Time) []byte {
	dst = append(dst, `{"type":"chunk","stream_id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","index":`...)
	dst = strconv.AppendInt(dst, int64(index), 10)
	dst = append(dst, `,"ts":"`...)
	dst = now.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	dst = append(dst, `","part":{"type":"text","text":" `...)
	dst = append(dst, word...) // plain words: nothing to escape
	return append(dst, `"}}`...)
}

// appendDone appends a done frame: the stream's last index.
func appendDone(dst []byte, id string, last int) []byte {
	dst = append(dst, `{"type":"done","stream_id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","status":"complete","last_index":`...)
	dst = strconv.AppendInt(dst, int64(last), 10)
	return append(dst, '}')
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// --- followers: Centrifugo's JSON protocol by hand ---------------------------

// follower is one connection subscribed to one stream's channel.
type follower struct {
	s      *state
	conn   *websocket.Conn
	last   int64 // the stream's last index
	next   int64 // next index expected
	done   bool
	lat    []int32
	closed atomic.Bool
}

var (
	pingMsg   = []byte(`{}`)
	keyPush   = []byte(`"push":{`)
	keyPub    = []byte(`"pub":{"data":{"type":"`)
	keyIndex  = []byte(`"index":`)
	keyLast   = []byte(`"last_index":`)
	keyTS     = []byte(`"ts":"`)
	keyError  = []byte(`"error":{`)
	keyDiscon = []byte(`"disconnect":{`)
)

func (s *state) openFollower(ctx context.Context, hc *http.Client, wsURL, token, channel string, last int64) (*follower, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	s.open.Add(1)
	s.opened.Add(1)
	f := &follower{s: s, conn: conn, last: last}
	fail := func(err error) (*follower, error) {
		conn.CloseNow()
		s.open.Add(-1)
		return nil, err
	}
	// Command ids 1 and 2; each reply is awaited before the next command.
	cmds := []string{
		`{"id":1,"connect":{"token":"` + token + `","name":"peer-driver"}}`,
		`{"id":2,"subscribe":{"channel":"` + channel + `"}}`,
	}
	var buf []byte
	for i, cmd := range cmds {
		if err := conn.Write(dctx, websocket.MessageText, []byte(cmd)); err != nil {
			return fail(err)
		}
		want := []byte(`{"id":` + strconv.Itoa(i+1) + `,`)
	await:
		for {
			b, err := readFrame(dctx, conn, buf[:0])
			buf = b
			if err != nil {
				return fail(fmt.Errorf("awaiting reply %d: %w", i+1, err))
			}
			for msg := range bytes.SplitSeq(b, []byte{'\n'}) {
				switch {
				case len(msg) == 0:
				case bytes.Equal(msg, pingMsg):
					if err := conn.Write(dctx, websocket.MessageText, pingMsg); err != nil {
						return fail(err)
					}
				case bytes.HasPrefix(msg, want):
					if bytes.Contains(msg, keyError) {
						return fail(fmt.Errorf("command %d: %s", i+1, msg))
					}
					break await
				}
			}
		}
	}
	s.subbed.Add(1)
	return f, nil
}

// readLoop reads pushes until the connection closes; it marks wg done once
// the stream's done frame arrived (or the connection ended before it).
func (f *follower) readLoop(ctx context.Context, wg *sync.WaitGroup) {
	s := f.s
	defer s.open.Add(-1)
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			wg.Done()
		}
	}
	defer signal()
	stop := context.AfterFunc(ctx, func() { f.conn.CloseNow() })
	defer stop()
	var buf []byte
	for {
		b, err := readFrame(context.Background(), f.conn, buf[:0])
		buf = b
		if err != nil {
			if !f.closed.Load() && ctx.Err() == nil && websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				s.noteErr(err)
			}
			f.flush()
			return
		}
		now := time.Now()
		for msg := range bytes.SplitSeq(b, []byte{'\n'}) {
			if len(msg) == 0 {
				continue
			}
			if bytes.Equal(msg, pingMsg) {
				// Centrifugo's application-level ping: answer with a pong.
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := f.conn.Write(wctx, websocket.MessageText, pingMsg)
				cancel()
				if err != nil && ctx.Err() == nil && !f.closed.Load() {
					s.noteErr(fmt.Errorf("pong: %w", err))
				}
				continue
			}
			i := bytes.Index(msg, keyPush)
			if i < 0 {
				if bytes.Contains(msg, keyError) {
					s.noteErr(fmt.Errorf("reply: %s", msg))
				}
				continue
			}
			push := msg[i+len(keyPush):]
			j := bytes.Index(push, keyPub)
			if j < 0 {
				if bytes.Contains(push, keyDiscon) {
					s.noteErr(fmt.Errorf("disconnected: %s", msg))
				}
				continue
			}
			data := push[j+len(keyPub):]
			switch {
			case bytes.HasPrefix(data, []byte(`chunk"`)):
				idx, ok := intAfter(data, keyIndex)
				if !ok || f.done {
					continue
				}
				f.onChunk(idx, data, now)
			case bytes.HasPrefix(data, []byte(`done"`)):
				last, ok := intAfter(data, keyLast)
				if !ok || f.done {
					continue
				}
				if f.next <= last {
					s.lost.Add(last + 1 - f.next)
					f.next = last + 1
				}
				f.done = true
				s.dones.Add(1)
				f.flush()
				signal()
			}
		}
	}
}

func (f *follower) onChunk(idx int64, data []byte, now time.Time) {
	s := f.s
	s.chunks.Add(1)
	if k := bytes.Index(data, keyTS); k >= 0 {
		rest := data[k+len(keyTS):]
		if e := bytes.IndexByte(rest, '"'); e > 0 {
			if ts, err := time.Parse(time.RFC3339Nano, string(rest[:e])); err == nil {
				f.lat = append(f.lat, int32(min(now.Sub(ts).Microseconds(), 1<<31-1)))
			}
		}
	}
	switch {
	case idx == f.next:
		f.next++
	case idx < f.next:
		s.dups.Add(1)
	default:
		s.lost.Add(idx - f.next)
		f.next = idx + 1
	}
}

func (f *follower) flush() {
	if len(f.lat) == 0 {
		return
	}
	f.s.mu.Lock()
	f.s.latencies = append(f.s.latencies, f.lat...)
	f.s.mu.Unlock()
	f.lat = nil
}

func intAfter(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n == 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	return v, err == nil
}

// readFrame reads the next message of c into buf, grown as needed (one
// buffer per connection, as chatstream's loadgen does).
func readFrame(ctx context.Context, c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.Reader(ctx)
	if err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func websocketURL(base string) (string, error) {
	u := strings.TrimRight(base, "/")
	switch {
	case strings.HasPrefix(u, "http://"):
		return "ws://" + strings.TrimPrefix(u, "http://") + "/connection/websocket", nil
	case strings.HasPrefix(u, "https://"):
		return "wss://" + strings.TrimPrefix(u, "https://") + "/connection/websocket", nil
	}
	return "", fmt.Errorf("base URL %q must start with http:// or https://", base)
}

func (s *state) printProgress(start time.Time, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c := s.chunks.Load()
			fmt.Fprintf(os.Stderr, "%5.0fs  sockets %6d  subscribed %6d  published %7d  chunks/s %8d  done %6d  lost %d  dup %d  errors %d\n",
				time.Since(start).Seconds(), s.open.Load(), s.subbed.Load(), s.pubs.Load(), c-last, s.dones.Load(),
				s.lost.Load(), s.dups.Load(), s.sockErrs.Load())
			last = c
		}
	}
}

// --- the report ---------------------------------------------------------------

func (r *report) print(w io.Writer) {
	c := r.cfg
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tfanout\n")
	fmt.Fprintf(tw, "peer\t%s\n", c.peer)
	fmt.Fprintf(tw, "streams × followers\t%d × %d (%d tokens at %g/s)\n", c.streams, c.followers, c.messages, c.rate)
	fmt.Fprintf(tw, "payload bytes\t%d–%d (chunk frames, in Centrifugo's publish data)\n", r.payloadMin, r.payloadMax)
	fmt.Fprintf(tw, "sockets opened\t%d\n", r.sockets)
	fmt.Fprintf(tw, "duration\t%.1fs (publishing %.1fs)\n", r.seconds, r.publishSeconds)
	fmt.Fprintf(tw, "generations\t%d (published over the HTTP API by the driver: %d requests, %d failed)\n", r.generations, r.published, r.publishErrors)
	fmt.Fprintf(tw, "chunks received\t%d (%.0f/s)\n", r.chunks, float64(r.chunks)/r.seconds)
	fmt.Fprintf(tw, "done received\t%d\n", r.dones)
	fmt.Fprintf(tw, "lost / duplicated\t%d / %d\n", r.lost, r.dups)
	fmt.Fprintf(tw, "snapshots\t0\n")
	fmt.Fprintf(tw, "socket errors\t%d\n", r.sockErrs)
	for _, e := range r.errSample {
		fmt.Fprintf(tw, "  error\t%.120s\n", e)
	}
	row := func(name string, d loadgen.Dist) {
		if d.N > 0 {
			fmt.Fprintf(tw, "%s (ms)\tp50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (n=%d)\n", name, d.P50, d.P90, d.P99, d.P999, d.Max, d.N)
		}
	}
	row("delivery publish→receipt", r.delivery)
	row("publish API call", r.publishCall)
	w0, ph := r.whole, r.pubPhase
	fmt.Fprintf(tw, "server CPU\t%.2fs (%.0f%% of one core)\n", w0.ServerCPUSeconds, 100*w0.ServerCPUSeconds/r.seconds)
	fmt.Fprintf(tw, "redis CPU\t%.2fs\n", w0.RedisCPUSeconds)
	fmt.Fprintf(tw, "loadgen CPU\t%.2fs\n", w0.LoadgenCPUSeconds)
	fmt.Fprintf(tw, "server RSS start / peak / end\t%s / %s / %s\n", mib(w0.ServerRSSStart), mib(w0.ServerRSSPeak), mib(w0.ServerRSSEnd))
	if cpu := w0.ServerCPUSeconds + w0.RedisCPUSeconds; cpu > 0 {
		fmt.Fprintf(tw, "deliveries per CPU-second (server+redis)\t%.0f\n", float64(r.chunks)/cpu)
	}
	if cpu := ph.ServerCPUSeconds + ph.RedisCPUSeconds; cpu > 0 {
		fmt.Fprintf(tw, "  publishing phase only\t%.0f (server %.2fs, redis %.2fs over %.1fs)\n", float64(r.chunks)/cpu, ph.ServerCPUSeconds, ph.RedisCPUSeconds, r.publishSeconds)
	}
	if c.redisURL != "" {
		fmt.Fprintf(tw, "redis commands / scripts\t%d / %d (%d PUBLISH)\n", w0.RedisCommands, w0.RedisScriptCalls, w0.RedisPublishes)
	}
	tw.Flush()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
