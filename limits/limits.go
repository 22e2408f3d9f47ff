// Package limits enforces chatstream's per-user limits across every node of
// a deployment: active generations, sends per minute, open sockets and
// conversations per minute per user, and dev tokens per minute per client
// address. The counts live in Redis, so two nodes share them.
//
// Counts of things held (generations, sockets) are sorted sets of their
// holders; a holder whose release was lost (its node died, Redis was down
// at the time) is found out when the set is full: a generation that no
// longer runs, or a socket of a node whose presence key expired, is dropped
// and the request goes through.
package limits

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
)

// Defaults of Config, as the contract gives them.
const (
	DefaultMaxActiveGenerations = 4
	DefaultSendRate             = 30 // per user per minute
	DefaultMaxSockets           = 32
	DefaultDevTokenRate         = 10 // per client address per minute
	DefaultConversationRate     = 60 // per user per minute
)

// Config sets the limits. For each, 0 takes the default and a negative
// value turns the limit off.
type Config struct {
	// MaxActiveGenerations is how many answers of one user may be queued
	// or running at once.
	MaxActiveGenerations int
	// SendRate is how many sends, edits and regenerations one user may
	// make per minute.
	SendRate int
	// MaxSockets is how many sockets one user may hold open.
	MaxSockets int
	// DevTokenRate is how many dev tokens one client address may get per
	// minute.
	DevTokenRate int
	// ConversationRate is how many conversations one user may create per
	// minute.
	ConversationRate int
	// PresenceTTL is how long a node counts as alive after it last said
	// so; the sockets of a node silent this long no longer count. Default 10s.
	PresenceTTL time.Duration
	// Logger receives the limiter's warnings. Default: discard.
	Logger *slog.Logger
}

// Off is a Config with every limit turned off, for load tests and for
// tests of other things than limits.
func Off() Config {
	return Config{MaxActiveGenerations: -1, SendRate: -1, MaxSockets: -1, DevTokenRate: -1, ConversationRate: -1}
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxActiveGenerations, DefaultMaxActiveGenerations)
	def(&c.SendRate, DefaultSendRate)
	def(&c.MaxSockets, DefaultMaxSockets)
	def(&c.DevTokenRate, DefaultDevTokenRate)
	def(&c.ConversationRate, DefaultConversationRate)
	if c.PresenceTTL <= 0 {
		c.PresenceTTL = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Streams tells whether a generation still runs: the limiter asks when a
// user's active generations look full, to drop those whose end it missed.
type Streams interface {
	Running(ctx context.Context, streamID string) (bool, error)
}

// Limiter is one node's view of the shared limits.
type Limiter struct {
	client  rueidis.Client
	prefix  string
	self    string // this process's name among the holders of sockets
	streams Streams
	cfg     Config
	seq     atomic.Uint64 // numbers this process's rate entries and sockets

	mu      sync.Mutex
	sockets map[string]struct{} // the socket holders of this process

	stop context.CancelFunc
	done chan struct{} // closed when the presence loop ends
}

// New returns a limiter on client, its keys under prefix. node names this
// node (a random suffix makes each process's name its own, so that a
// restarted node's old sockets are not taken for its new ones).
func New(client rueidis.Client, prefix, node string, streams Streams, cfg Config) *Limiter {
	cfg.setDefaults()
	return &Limiter{client: client, prefix: prefix, self: node + "-" + rand.Text()[:8], streams: streams, cfg: cfg,
		sockets: map[string]struct{}{}}
}

// Start says that this node is alive and keeps saying so until Close.
func (l *Limiter) Start(ctx context.Context) error {
	if err := l.beat(ctx); err != nil {
		return err
	}
	ctx, l.stop = context.WithCancel(context.Background())
	l.done = make(chan struct{})
	// The presence loop lives until Close.
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.cfg.PresenceTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				bctx, cancel := context.WithTimeout(ctx, l.cfg.PresenceTTL/3)
				if err := l.beat(bctx); err != nil && ctx.Err() == nil {
					l.cfg.Logger.Warn("limits: node presence", "err", err)
				}
				cancel()
			}
		}
	}()
	return nil
}

// Close stops the presence loop and says that this node is gone: its
// sockets no longer count anywhere.
func (l *Limiter) Close() {
	if l.stop == nil {
		return
	}
	l.stop()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.client.Do(ctx, l.client.B().Del().Key(l.presenceKey(l.self)).Build()).Error()
}

func (l *Limiter) beat(ctx context.Context) error {
	err := l.client.Do(ctx, l.client.B().Set().Key(l.presenceKey(l.self)).Value("1").Px(l.cfg.PresenceTTL).Build()).Error()
	if err != nil {
		return fmt.Errorf("limits: presence: %w", err)
	}
	return nil
}

// Key names. A user's keys share the user as a hash tag (one slot on a
// Redis Cluster), encoded so that no user id can break the tag.
func (l *Limiter) userKey(user, what string) string {
	return l.prefix + "limits:{u:" + base64.RawURLEncoding.EncodeToString([]byte(user)) + "}:" + what
}

func (l *Limiter) addrKey(addr string) string {
	return l.prefix + "limits:{a:" + base64.RawURLEncoding.EncodeToString([]byte(addr)) + "}:devtokens"
}

func (l *Limiter) presenceKey(node string) string { return l.prefix + "limits:node:" + node }

// holderName is a unique name of something this process holds or counts.
func (l *Limiter) holderName() string {
	return l.self + "/" + strconv.FormatUint(l.seq.Add(1), 10)
}

// window is a minute: the period of every rate.
const window = time.Minute

// windowScript counts one event in a sliding window of the sorted set
// KEYS[1] unless it holds ARGV[1] events already. ARGV: limit, window ms,
// member. Returns 0 when counted, else the milliseconds until one leaves
// the window.
var windowScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
`)

// rate counts one event against limit per minute in key; a refusal is a
// rate_limited error with when to retry.
func (l *Limiter) rate(ctx context.Context, key string, limit int, what string) error {
	if limit < 0 {
		return nil
	}
	wait, err := windowScript.Exec(ctx, l.client, []string{key},
		[]string{strconv.Itoa(limit), strconv.FormatInt(window.Milliseconds(), 10), l.holderName()}).AsInt64()
	if err != nil {
		return fmt.Errorf("limits: %s: %w", what, err)
	}
	if wait > 0 {
		return chatstream.RateLimited(time.Duration(wait)*time.Millisecond,
			"Too many %s: at most %d a minute. Try again in a moment.", what, limit)
	}
	return nil
}

// AllowSend counts a send, edit or regeneration of user, or refuses it
// with a rate_limited error. A Redis error is returned as is: the request
// needs Redis anyway.
func (l *Limiter) AllowSend(ctx context.Context, user string) error {
	return l.rate(ctx, l.userKey(user, "sends"), l.cfg.SendRate, "messages")
}

// AllowConversation counts a conversation created by user, or refuses it
// with a rate_limited error. Without Redis it lets it through (creating a
// conversation needs only Postgres).
func (l *Limiter) AllowConversation(ctx context.Context, user string) error {
	return l.failOpen(l.rate(ctx, l.userKey(user, "conversations"), l.cfg.ConversationRate, "new conversations"))
}

// AllowDevToken counts a dev token asked for from addr, or refuses it with
// a rate_limited error. Without Redis it lets it through.
func (l *Limiter) AllowDevToken(ctx context.Context, addr string) error {
	return l.failOpen(l.rate(ctx, l.addrKey(addr), l.cfg.DevTokenRate, "access tokens from this address"))
}

// failOpen passes refusals on and lets Redis errors through with a warning.
func (l *Limiter) failOpen(err error) error {
	if err == nil || chatstream.ErrorCode(err) == chatstream.ERATELIMIT {
		return err
	}
	l.cfg.Logger.Warn("limits: not enforced, redis does not answer", "err", err)
	return nil
}

// holdTTL bounds the life of a user's set of holders: it is renewed by
// every hold, and anything held longer is not counted.
const holdTTL = 24 * time.Hour

// holdScript adds ARGV[1] to the holders in KEYS[1] unless ARGV[2] hold
// already. ARGV: member, limit, ttl ms. Returns {1, now ms} when held, else
// {0, now ms, member, score, member, score, ...} of the holders.
var holdScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, now}
end
local res = {0, now}
for _, v in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')) do
  table.insert(res, v)
end
return res
`)

// holder is a member of a set of holders and when it was added (Redis ms).
type holder struct {
	member string
	since  int64
}

// hold adds member to the holders in key, up to limit. When the set is
// full, stale tells which holders no longer hold; they are dropped and the
// hold is tried once more.
func (l *Limiter) hold(ctx context.Context, key, member string, limit int,
	stale func(ctx context.Context, now int64, held []holder) ([]string, error)) (bool, error) {
	for try := 0; ; try++ {
		v, err := holdScript.Exec(ctx, l.client, []string{key},
			[]string{member, strconv.Itoa(limit), strconv.FormatInt(holdTTL.Milliseconds(), 10)}).ToArray()
		if err != nil {
			return false, err
		}
		if len(v) < 2 {
			return false, errors.New("short answer")
		}
		ok, _ := v[0].AsInt64()
		if ok == 1 {
			return true, nil
		}
		if try > 0 {
			return false, nil
		}
		now, _ := v[1].AsInt64()
		var held []holder
		for i := 2; i+1 < len(v); i += 2 {
			m, _ := v[i].ToString()
			score, _ := v[i+1].AsFloat64()
			held = append(held, holder{member: m, since: int64(score)})
		}
		gone, err := stale(ctx, now, held)
		if err != nil {
			return false, err
		}
		if len(gone) == 0 {
			return false, nil
		}
		if err := l.client.Do(ctx, l.client.B().Zrem().Key(key).Member(gone...).Build()).Error(); err != nil {
			return false, err
		}
	}
}

// startGrace is how long a generation counts as starting: its stream's meta
// is written right after it is held, so one without a meta is not taken for
// ended before this.
const startGrace = 30 * time.Second

// AcquireGeneration counts stream streamID among user's active
// generations, or refuses it with a rate_limited error when the user has
// MaxActiveGenerations already. Counting it again is not an error.
func (l *Limiter) AcquireGeneration(ctx context.Context, user, streamID string) error {
	limit := l.cfg.MaxActiveGenerations
	if limit < 0 {
		return nil
	}
	ok, err := l.hold(ctx, l.userKey(user, "active"), streamID, limit,
		func(ctx context.Context, now int64, held []holder) ([]string, error) {
			var gone []string
			for _, h := range held {
				if now-h.since < startGrace.Milliseconds() {
					continue
				}
				running, err := l.streams.Running(ctx, h.member)
				if err != nil {
					return nil, err
				}
				if !running {
					gone = append(gone, h.member)
				}
			}
			return gone, nil
		})
	if err != nil {
		return fmt.Errorf("limits: active generations: %w", err)
	}
	if !ok {
		return chatstream.RateLimited(5*time.Second,
			"You have %d answers being generated already; wait for one to end.", limit)
	}
	return nil
}

// ReleaseGeneration stops counting stream streamID among user's active
// generations. An error is logged: the count finds the stream ended anyway.
func (l *Limiter) ReleaseGeneration(ctx context.Context, user, streamID string) {
	if l.cfg.MaxActiveGenerations < 0 {
		return
	}
	if err := l.client.Do(ctx, l.client.B().Zrem().Key(l.userKey(user, "active")).Member(streamID).Build()).Error(); err != nil {
		l.cfg.Logger.Warn("limits: release a generation", "stream_id", streamID, "err", err)
	}
}

// AcquireSocket counts a socket of user, or refuses it with a rate_limited
// error when the user has MaxSockets open on all nodes. release, which must
// be called once the socket closes, stops counting it. Without Redis the
// socket is let through.
func (l *Limiter) AcquireSocket(ctx context.Context, user string) (release func(), err error) {
	limit := l.cfg.MaxSockets
	if limit < 0 {
		return func() {}, nil
	}
	key, member := l.userKey(user, "sockets"), l.holderName()
	l.mu.Lock()
	l.sockets[member] = struct{}{}
	l.mu.Unlock()
	release = func() {
		l.mu.Lock()
		delete(l.sockets, member)
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := l.client.Do(ctx, l.client.B().Zrem().Key(key).Member(member).Build()).Error(); err != nil {
			l.cfg.Logger.Warn("limits: release a socket", "err", err)
		}
	}
	ok, err := l.hold(ctx, key, member, limit, l.staleSockets)
	if err != nil {
		l.cfg.Logger.Warn("limits: sockets not counted, redis does not answer", "err", err)
		return release, nil
	}
	if !ok {
		release()
		return nil, chatstream.RateLimited(5*time.Second, "You have %d sockets open already; close one first.", limit)
	}
	return release, nil
}

// staleSockets returns the holders of sockets that are closed: this
// process's that it no longer holds, and those of processes whose presence
// expired.
func (l *Limiter) staleSockets(ctx context.Context, _ int64, held []holder) ([]string, error) {
	var gone []string
	alive := map[string]bool{}
	for _, h := range held {
		node, _, _ := strings.Cut(h.member, "/")
		if node == l.self {
			l.mu.Lock()
			_, open := l.sockets[h.member]
			l.mu.Unlock()
			if !open {
				gone = append(gone, h.member)
			}
			continue
		}
		up, seen := alive[node]
		if !seen {
			n, err := l.client.Do(ctx, l.client.B().Exists().Key(l.presenceKey(node)).Build()).AsInt64()
			if err != nil {
				return nil, err
			}
			up = n > 0
			alive[node] = up
		}
		if !up {
			gone = append(gone, h.member)
		}
	}
	return gone, nil
}
