package streaming

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// ClientConfig tunes the Redis client. Zero values take the defaults.
type ClientConfig struct {
	// BlockingPoolSize is the pool of connections for blocking commands
	// (the workers' BLMOVE); it must be at least the number of workers.
	// Default 64.
	BlockingPoolSize int
	// MaxFlushDelay trades latency for CPU by batching writes; default 0.
	MaxFlushDelay time.Duration
}

// NewClient connects to the Redis at url (redis://host:port/db). rueidis
// finds out by itself whether the server is a Redis Cluster.
func NewClient(url string, cfg ClientConfig) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	opt.DisableCache = true // client-side caching is not used; it needs RESP3 tracking
	opt.BlockingPoolSize = cfg.BlockingPoolSize
	if opt.BlockingPoolSize <= 0 {
		opt.BlockingPoolSize = 64
	}
	opt.MaxFlushDelay = cfg.MaxFlushDelay
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("connect to redis: %w", err)
	}
	return client, nil
}

// Pinger adapts a Redis client to a readiness check.
type Pinger struct{ Client rueidis.Client }

// Ping sends PING.
func (p Pinger) Ping(ctx context.Context) error {
	return p.Client.Do(ctx, p.Client.B().Ping().Build()).Error()
}

// CheckCluster refuses a Redis Cluster that cannot carry the streams: the
// hub needs sharded pub/sub (SSUBSCRIBE, SPUBLISH) and CLUSTER SHARDS, both
// Redis 7.0. A single Redis of any supported version passes.
func CheckCluster(ctx context.Context, client rueidis.Client) error {
	if !sharded(client) {
		return nil
	}
	info, err := client.Do(ctx, client.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return fmt.Errorf("redis cluster: read the server version: %w", err)
	}
	return clusterVersionOK(info)
}

// clusterVersionOK checks the redis_version of an INFO server answer.
func clusterVersionOK(info string) error {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			major, _, _ := strings.Cut(v, ".")
			if n, err := strconv.Atoi(major); err != nil || n < 7 {
				return fmt.Errorf("REDIS_URL is a Redis Cluster of version %s: a cluster needs Redis 7.0 or later (sharded pub/sub)", v)
			}
			return nil
		}
	}
	return errors.New("redis cluster: INFO server gave no redis_version")
}

// EvictionRisk says whether Redis may evict chatstream's keys: a maxmemory
// limit with a maxmemory-policy other than noeviction lets Redis drop
// chunk logs, queued jobs and limits under memory pressure (with
// noeviction a full Redis refuses writes, which the workers retry and
// fail visibly). It reads INFO memory (which managed Redis allows where
// CONFIG may not), on every master of a cluster; "" means no risk.
func EvictionRisk(ctx context.Context, client rueidis.Client) (string, error) {
	nodes := map[string]rueidis.Client{"": client}
	if sharded(client) {
		nodes = client.Nodes()
	}
	var risks []string
	for addr, c := range nodes {
		info, err := c.Do(ctx, c.B().Info().Section("memory").Build()).ToString()
		if err != nil {
			return "", fmt.Errorf("redis: read INFO memory: %w", err)
		}
		if risk := evictionRisk(info); risk != "" {
			if addr != "" {
				risk = addr + ": " + risk
			}
			risks = append(risks, risk)
		}
	}
	slices.Sort(risks)
	return strings.Join(risks, "; "), nil
}

// evictionRisk reads the maxmemory and maxmemory_policy of an INFO memory
// answer.
func evictionRisk(info string) string {
	var limit, policy string
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "maxmemory:"); ok {
			limit = v
		} else if v, ok := strings.CutPrefix(line, "maxmemory_policy:"); ok {
			policy = v
		}
	}
	if limit == "" || limit == "0" || policy == "" || policy == "noeviction" {
		return ""
	}
	return fmt.Sprintf("maxmemory %s bytes with maxmemory-policy %s", limit, policy)
}
