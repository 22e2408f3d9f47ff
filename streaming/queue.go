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

func (c *QueueConfig) setDefaults() {
	if c.HeartbeatTTL <= 0 {
		c.HeartbeatTTL = 10 * time.Second
	}
	if c.BlockTimeout <= 0 {
		c.BlockTimeout = time.Second
	}
}

// Queue is the reliable job queue: jobs wait in a list; a worker moves one
// atomically into its node's processing list, and removes it only when the
// job is done. A node that stops heart-beating is dead: any node takes its
// processing list over.
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

// Enqueue adds job at the back of the queue.
func (q *Queue) Enqueue(ctx context.Context, job chatstream.Job) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	if err := q.client.Do(ctx, q.client.B().Lpush().Key(q.keys.Pending()).Element(string(b)).Build()).Error(); err != nil {
		return fmt.Errorf("enqueue %s: %w", job.StreamID, err)
	}
	return nil
}

// Take waits up to BlockTimeout for a job and moves it into this node's
// processing list. ok is false when none came.
func (q *Queue) Take(ctx context.Context) (t Taken, ok bool, err error) {
	cmd := q.client.B().Blmove().Source(q.keys.Pending()).Destination(q.keys.Processing(q.node)).
		Right().Left().Timeout(q.cfg.BlockTimeout.Seconds()).Build()
	raw, err := q.client.Do(ctx, cmd).ToString()
	if rueidis.IsRedisNil(err) {
		return Taken{}, false, nil
	} else if err != nil {
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

// requeueScript moves a job from a processing list to the front of the
// queue. KEYS: processing, pending. ARGV: raw job.
var requeueScript = rueidis.NewLuaScript(`
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
`)

// Requeue hands a job of this node back to the queue, first in line.
func (q *Queue) Requeue(ctx context.Context, raw string) error {
	err := requeueScript.Exec(ctx, q.client, []string{q.keys.Processing(q.node), q.keys.Pending()}, []string{raw}).Error()
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
func (q *Queue) Adopt(ctx context.Context, dead string) (t Taken, ok bool, err error) {
	raw, err := q.client.Do(ctx, q.client.B().Lmove().Source(q.keys.Processing(dead)).
		Destination(q.keys.Processing(q.node)).Right().Left().Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return Taken{}, false, q.forget(ctx, dead)
	} else if err != nil {
		return Taken{}, false, fmt.Errorf("adopt job of %s: %w", dead, err)
	}
	return q.decode(raw)
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

// Pending returns the number of jobs waiting.
func (q *Queue) Pending(ctx context.Context) (int64, error) {
	return q.client.Do(ctx, q.client.B().Llen().Key(q.keys.Pending()).Build()).AsInt64()
}
