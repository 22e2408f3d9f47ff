package streaming

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
)

// QueueConfig tunes the queue. Zero values take the defaults.
type QueueConfig struct {
	// HeartbeatTTL is how long a node counts as alive after its last
	// heartbeat; its jobs are taken over after that. Default 10s.
	HeartbeatTTL time.Duration
	// BlockTimeout bounds each wait for a job, so that shutdown is prompt.
	// Default 1s.
	BlockTimeout time.Duration
}

// DefaultHeartbeatTTL is how long a node counts as alive after its last
// heartbeat, unless QueueConfig says otherwise.
const DefaultHeartbeatTTL = 10 * time.Second

func (c *QueueConfig) setDefaults() {
	if c.HeartbeatTTL <= 0 {
		c.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if c.BlockTimeout <= 0 {
		c.BlockTimeout = time.Second
	}
}

// Queue is the reliable job queue, fair between users: jobs wait in a
// sorted set by round, a user's first waiting job in the round after the
// one being served, each next one a round later, so a user's backlog
// delays another user's first job by at most one job per user waiting.
// A worker blocks on a list of tickets (one per waiting job), moves one
// atomically into its node's processing list, and swaps it there for the
// next job in line; it removes the job only when the job is done. A node
// that stops heart-beating is dead: any node takes its processing list
// over (a ticket found there goes back to the tickets).
type Queue struct {
	client rueidis.Client
	keys   Keys
	node   string
	cfg    QueueConfig
}

// NewQueue returns the queue as seen from node.
func NewQueue(client rueidis.Client, keys Keys, node string, cfg QueueConfig) *Queue {
	cfg.setDefaults()
	return &Queue{client: client, keys: keys, node: node, cfg: cfg}
}

// Node is the id of the node this queue works for.
func (q *Queue) Node() string { return q.node }

// HeartbeatTTL is the configured heartbeat lifetime.
func (q *Queue) HeartbeatTTL() time.Duration { return q.cfg.HeartbeatTTL }

// Taken is a job held in a processing list; Raw is its exact list entry.
type Taken struct {
	Job chatstream.Job
	Raw string
}

// ticket stands for a waiting job in the tickets list. An entry that is not
// a ticket is a job itself, queued by a version before fair queueing.
const ticket = "t"

// enqueueScript puts a job in line for its user and adds its ticket. In the
// sorted set a job is prefixed by its 16-digit sequence number, so that
// within a round jobs go in the order they came.
// KEYS: tickets, jobs, rounds, round, seq. ARGV: job, user.
var enqueueScript = rueidis.NewLuaScript(`
local cur = tonumber(redis.call('GET', KEYS[4]) or '0')
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
local r = math.max(last, cur) + 1
redis.call('HSET', KEYS[3], ARGV[2], r)
local seq = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[2], r, string.format('%016d', seq) .. ARGV[1])
redis.call('LPUSH', KEYS[1], 't')
return r
`)

// Enqueue puts job in line behind its user's other waiting jobs.
func (q *Queue) Enqueue(ctx context.Context, job chatstream.Job) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	k := q.keys
	err = enqueueScript.Exec(ctx, q.client, []string{k.Pending(), k.Jobs(), k.Rounds(), k.Round(), k.Seq()},
		[]string{string(b), job.UserID}).Error()
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", job.StreamID, err)
	}
	return nil
}

// swapScript swaps a ticket in a processing list for the next job in line,
// and makes that job's round the one being served. KEYS: processing, jobs,
// rounds, round. ARGV: ticket. Returns the job, or nil when there is none
// (the ticket is dropped).
var swapScript = rueidis.NewLuaScript(`
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return false end
local popped = redis.call('ZPOPMIN', KEYS[2])
if #popped == 0 then return false end
local job = string.sub(popped[1], 17)
redis.call('SET', KEYS[4], popped[2])
local ok, decoded = pcall(cjson.decode, job)
local user = ok and type(decoded) == 'table' and decoded['user_id']
if type(user) == 'string' and tonumber(redis.call('HGET', KEYS[3], user)) == tonumber(popped[2]) then
  redis.call('HDEL', KEYS[3], user)
end
redis.call('LPUSH', KEYS[1], job)
return job
`)

// Take waits up to BlockTimeout for a job and moves it into this node's
// processing list. ok is false when none came.
func (q *Queue) Take(ctx context.Context) (t Taken, ok bool, err error) {
	k := q.keys
	cmd := q.client.B().Blmove().Source(k.Pending()).Destination(k.Processing(q.node)).
		Right().Left().Timeout(q.cfg.BlockTimeout.Seconds()).Build()
	raw, err := q.client.Do(ctx, cmd).ToString()
	if rueidis.IsRedisNil(err) {
		return Taken{}, false, nil
	} else if err != nil {
		return Taken{}, false, fmt.Errorf("take job: %w", err)
	}
	if raw != ticket {
		return q.decode(raw) // queued by an older version: a job itself
	}
	raw, err = swapScript.Exec(ctx, q.client, []string{k.Processing(q.node), k.Jobs(), k.Rounds(), k.Round()},
		[]string{ticket}).ToString()
	if rueidis.IsRedisNil(err) {
		return Taken{}, false, nil // a ticket without a job
	} else if err != nil {
		// The ticket may still be in the processing list: this node's
		// shutdown, or a reaper, gives it back.
		return Taken{}, false, fmt.Errorf("take job: %w", err)
	}
	return q.decode(raw)
}

func (q *Queue) decode(raw string) (Taken, bool, error) {
	t := Taken{Raw: raw}
	if err := json.Unmarshal([]byte(raw), &t.Job); err != nil || t.Job.StreamID == "" {
		// Not a job of ours: drop it rather than choke on it forever.
		_ = q.Done(context.Background(), raw)
		return Taken{}, false, fmt.Errorf("malformed job %q dropped", raw)
	}
	return t, true, nil
}

// Done removes a finished job from this node's processing list.
func (q *Queue) Done(ctx context.Context, raw string) error {
	if err := q.client.Do(ctx, q.client.B().Lrem().Key(q.keys.Processing(q.node)).Count(1).Element(raw).Build()).Error(); err != nil {
		return fmt.Errorf("remove finished job: %w", err)
	}
	return nil
}

// requeueScript moves a job from a processing list to the front of the line,
// or a ticket back to the tickets. KEYS: processing, tickets, jobs, rounds,
// round. ARGV: raw entry.
var requeueScript = rueidis.NewLuaScript(`
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[1] ~= 't' then
  local cur = redis.call('GET', KEYS[5]) or '0'
  redis.call('ZADD', KEYS[3], cur, string.rep('0', 16) .. ARGV[1])
  local ok, decoded = pcall(cjson.decode, ARGV[1])
  local user = ok and type(decoded) == 'table' and decoded['user_id']
  if type(user) == 'string' then
    redis.call('HSETNX', KEYS[4], user, cur)
  end
end
redis.call('RPUSH', KEYS[2], 't')
return 1
`)

// Requeue hands a job of this node back to the queue, first in line.
func (q *Queue) Requeue(ctx context.Context, raw string) error {
	k := q.keys
	err := requeueScript.Exec(ctx, q.client,
		[]string{k.Processing(q.node), k.Pending(), k.Jobs(), k.Rounds(), k.Round()}, []string{raw}).Error()
	if err != nil {
		return fmt.Errorf("requeue job: %w", err)
	}
	return nil
}

// Heartbeat says this node is alive for another HeartbeatTTL.
func (q *Queue) Heartbeat(ctx context.Context) error {
	for _, r := range q.client.DoMulti(ctx,
		q.client.B().Set().Key(q.keys.Heartbeat(q.node)).Value("1").Px(q.cfg.HeartbeatTTL).Build(),
		q.client.B().Sadd().Key(q.keys.Nodes()).Member(q.node).Build()) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
	}
	return nil
}

// Leave ends this node's heartbeat, after its work is done or handed back.
func (q *Queue) Leave(ctx context.Context) error {
	for _, r := range q.client.DoMulti(ctx,
		q.client.B().Del().Key(q.keys.Heartbeat(q.node)).Build(),
		q.client.B().Srem().Key(q.keys.Nodes()).Member(q.node).Build()) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("leave: %w", err)
		}
	}
	return nil
}

// DeadNodes returns the nodes whose heartbeat expired.
func (q *Queue) DeadNodes(ctx context.Context) ([]string, error) {
	nodes, err := q.client.Do(ctx, q.client.B().Smembers().Key(q.keys.Nodes()).Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var dead []string
	for _, n := range nodes {
		if n == q.node {
			continue
		}
		alive, err := q.client.Do(ctx, q.client.B().Exists().Key(q.keys.Heartbeat(n)).Build()).AsInt64()
		if err != nil {
			return nil, fmt.Errorf("check node %s: %w", n, err)
		}
		if alive == 0 {
			dead = append(dead, n)
		}
	}
	return dead, nil
}

// Adopt moves one job of dead node into this node's processing list. ok is
// false when the dead node holds no more jobs; then the node is forgotten.
// Tickets the dead node held go back to the tickets on the way.
func (q *Queue) Adopt(ctx context.Context, dead string) (t Taken, ok bool, err error) {
	for {
		raw, err := q.client.Do(ctx, q.client.B().Lmove().Source(q.keys.Processing(dead)).
			Destination(q.keys.Processing(q.node)).Right().Left().Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return Taken{}, false, q.forget(ctx, dead)
		} else if err != nil {
			return Taken{}, false, fmt.Errorf("adopt job of %s: %w", dead, err)
		}
		if raw != ticket {
			return q.decode(raw)
		}
		if err := q.Requeue(ctx, raw); err != nil {
			return Taken{}, false, fmt.Errorf("adopt job of %s: %w", dead, err)
		}
	}
}

// forgetScript drops a dead node from the set once it holds no jobs and has
// not come back. KEYS: processing, heartbeat, nodes. ARGV: node.
var forgetScript = rueidis.NewLuaScript(`
if redis.call('LLEN', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return 0
`)

func (q *Queue) forget(ctx context.Context, dead string) error {
	err := forgetScript.Exec(ctx, q.client,
		[]string{q.keys.Processing(dead), q.keys.Heartbeat(dead), q.keys.Nodes()}, []string{dead}).Error()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("forget node %s: %w", dead, err)
	}
	return nil
}

// Pending returns the number of jobs waiting (one ticket each).
func (q *Queue) Pending(ctx context.Context) (int64, error) {
	return q.client.Do(ctx, q.client.B().Llen().Key(q.keys.Pending()).Build()).AsInt64()
}
