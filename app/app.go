// Package app wires one chatstream node: Postgres, Redis, the hub, the
// generation workers and the HTTP server, with their start and their orderly
// shutdown. cmd/chatstream fills its Config from flags and the environment;
// end-to-end tests fill it directly.
package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/delivery"
	"github.com/chatstream/chatstream/frontend"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/store"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/tools"
	"github.com/chatstream/chatstream/worker"
)

// Config is a node's configuration. See the README's table for the
// environment variables behind each field.
type Config struct {
	HTTPAddr    string
	RedisURL    string
	DatabaseURL string
	// DatabaseMaxConns caps the Postgres pool; 0: the URL's pool_max_conns,
	// else store.DefaultMaxConns.
	DatabaseMaxConns int32
	// RedisFlushDelay lets rueidis wait this long to batch commands into one
	// write; 0 writes at once.
	RedisFlushDelay time.Duration
	AuthSecret      []byte
	AuthDev         bool
	// DevTokenTTL is the lifetime of dev tokens; 0 is the server's default
	// (a day). Tests of token renewal shorten it.
	DevTokenTTL     time.Duration
	MaxContentBytes int
	StreamTTL       time.Duration
	// ChunksCompactAfter is how long an ended stream keeps its chunks before
	// its compacted parts stand in for them; negative keeps them for StreamTTL.
	ChunksCompactAfter time.Duration
	// ShutdownGrace bounds the graceful part of Shutdown. Default
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	Logger        *slog.Logger

	// NodeID names this node in the queue; default: host name and a random suffix.
	NodeID string
	// Workers is the number of generation workers; 0 makes an API-only node.
	Workers int
	// WorkerOnly makes a node without the API (ROLES=worker): its HTTP
	// server answers /healthz, /readyz and /metrics alone.
	WorkerOnly bool
	// Worker tunes the generations (its Workers field is ignored).
	Worker worker.Config
	// Provider is the model; nil selects OpenAI when OpenAIAPIKey is set,
	// else the offline demo model.
	Provider      llm.Provider
	OpenAIAPIKey  string
	OpenAIBaseURL string
	OpenAIModel   string
	// DemoTokensPerSec paces the demo model.
	DemoTokensPerSec float64
	// HeartbeatTTL is how long a silent node counts as alive. Default 10s.
	HeartbeatTTL time.Duration
	// KeyPrefix is put before every Redis key and channel; empty in
	// production, unique per test.
	KeyPrefix string
	// WS tunes the WebSocket endpoint (queue size, timeouts, limits).
	WS server.WSConfig
	// SSE tunes the Server-Sent Events routes.
	SSE server.SSEConfig
	// Limits are the per-user limits, shared by every node through Redis.
	// Its PresenceTTL defaults to HeartbeatTTL.
	Limits limits.Config
	// AllowedHosts, TrustedProxies, BodyTimeout and MaxConnsPerAddr guard
	// the HTTP server; see server.Config.
	AllowedHosts    []string
	TrustedProxies  []string
	BodyTimeout     time.Duration
	MaxConnsPerAddr int
}

// Defaults of a node's Config; the components' own (server, worker,
// streaming, limits, llm) are theirs.
const (
	DefaultHTTPAddr    = ":8080"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultDatabaseURL = "postgres://localhost:5432/chatstream?sslmode=disable"
	DefaultStreamTTL   = time.Hour
	// DefaultChunksCompactAfter keeps an ended stream's chunks for the
	// resumes that come right after the end.
	DefaultChunksCompactAfter = time.Minute
	DefaultShutdownGrace      = 10 * time.Second
	DefaultOpenAIModel        = "gpt-4o-mini"
)

func (c *Config) setDefaults() {
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.StreamTTL <= 0 {
		c.StreamTTL = DefaultStreamTTL
	}
	if c.ChunksCompactAfter == 0 {
		c.ChunksCompactAfter = DefaultChunksCompactAfter
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.NodeID == "" {
		host, _ := os.Hostname()
		c.NodeID = fmt.Sprintf("%s-%s", host, rand.Text()[:8])
	}
	if c.OpenAIModel == "" {
		c.OpenAIModel = DefaultOpenAIModel
	}
}

// provider returns the configured model.
func (c *Config) provider() llm.Provider {
	switch {
	case c.Provider != nil:
		return c.Provider
	case c.OpenAIAPIKey != "":
		return llm.NewOpenAI(llm.OpenAIConfig{BaseURL: c.OpenAIBaseURL, APIKey: c.OpenAIAPIKey, Model: c.OpenAIModel, IncludeUsage: true})
	}
	return llm.NewDemo(llm.DemoConfig{TokensPerSec: c.DemoTokensPerSec})
}

// Main is one running node.
type Main struct {
	cfg     Config
	logger  *slog.Logger
	db      *store.DB
	redis   rueidis.Client
	hub     *streaming.Hub
	limits  *limits.Limiter
	streams *delivery.Streams
	watch   *delivery.Watcher
	pool    *worker.Pool
	srv     *server.Server
	ln      net.Listener
	reg     *prometheus.Registry

	serveDone chan error // receives Serve's result once; buffered 1
	closeOnce sync.Once
}

// New returns a node that Start will bring up.
func New(cfg Config) *Main {
	cfg.setDefaults()
	return &Main{cfg: cfg, logger: cfg.Logger, serveDone: make(chan error, 1)}
}

// Migrate applies the Postgres migrations and returns.
func Migrate(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	db, err := store.Open(ctx, databaseURL, store.Config{Logger: logger})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Migrate(ctx)
}

// Start connects to Postgres and Redis, applies the migrations, and starts
// serving on HTTPAddr. On error everything it opened is closed again.
func (m *Main) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			m.closeResources()
		}
	}()
	secret := m.cfg.AuthSecret
	if len(secret) == 0 {
		if !m.cfg.AuthDev {
			return errors.New("AUTH_SECRET is required unless AUTH_DEV=true")
		}
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
		m.logger.Warn("AUTH_SECRET unset: signing dev tokens with a random key; they stop working when this process exits")
	}
	if m.db, err = store.Open(ctx, m.cfg.DatabaseURL, store.Config{Logger: m.logger, MaxConns: m.cfg.DatabaseMaxConns}); err != nil {
		return err
	}
	if err = m.db.Migrate(ctx); err != nil {
		return err
	}
	// Blocking connections: the job takers' BLMOVE and the hub's pub/sub.
	if m.redis, err = streaming.NewClient(m.cfg.RedisURL, streaming.ClientConfig{BlockingPoolSize: 16, MaxFlushDelay: m.cfg.RedisFlushDelay}); err != nil {
		return err
	}
	if err = streaming.CheckCluster(ctx, m.redis); err != nil {
		return err
	}
	// Eviction loses data silently; a full Redis under noeviction refuses
	// writes, which are retried and end answers failed, visibly.
	if risk, err := streaming.EvictionRisk(ctx, m.redis); err != nil {
		m.logger.Info("redis: could not read the memory policy", "err", err)
	} else if risk != "" {
		m.logger.Warn("redis may evict chatstream's keys under memory pressure (chunk logs, queued jobs, limits): set maxmemory-policy noeviction", "redis", risk)
	}
	m.reg = server.NewRegistry()
	smetrics := streaming.NewMetrics(m.reg)
	wmetrics := worker.NewMetrics(m.reg)
	keys := streaming.Keys{Prefix: m.cfg.KeyPrefix}
	chunkLog := streaming.NewChunkLog(m.redis, keys, m.cfg.StreamTTL)
	if m.cfg.ChunksCompactAfter > 0 {
		chunkLog.CompactAfter(m.cfg.ChunksCompactAfter)
	}
	queue := streaming.NewQueue(m.redis, keys, m.cfg.NodeID, streaming.QueueConfig{HeartbeatTTL: m.cfg.HeartbeatTTL})
	events := streaming.NewEvents(m.redis, keys, m.logger)
	lcfg := m.cfg.Limits
	lcfg.Logger = m.logger
	if lcfg.PresenceTTL <= 0 {
		lcfg.PresenceTTL = m.cfg.HeartbeatTTL
	}
	m.limits = limits.New(m.redis, m.cfg.KeyPrefix, m.cfg.NodeID, chunkLog, lcfg)
	if err = m.limits.Start(ctx); err != nil {
		return err
	}
	m.hub = streaming.NewHub(m.redis, streaming.HubConfig{Logger: m.logger, Metrics: smetrics})
	m.streams = delivery.NewStreams(m.hub, chunkLog, m.db, delivery.StreamsConfig{Logger: m.logger, Metrics: delivery.NewMetrics(m.reg)})
	m.watch = delivery.NewWatcher(m.hub, keys, m.db, m.logger)
	gens := worker.NewGenerations(m.db, chunkLog, queue, events, m.limits, wmetrics, m.logger)
	if _, err = gens.FollowDeletions(ctx, m.hub, keys.Deletions()); err != nil {
		return fmt.Errorf("subscribe to deletions: %w", err)
	}
	if m.cfg.Workers > 0 {
		wcfg := m.cfg.Worker
		wcfg.Workers, wcfg.Logger, wcfg.Metrics = m.cfg.Workers, m.logger, wmetrics
		provider := m.cfg.provider()
		if _, demo := provider.(*llm.Demo); demo && wcfg.Tools == nil {
			// The offline demo shows tool calls without a TOOLS_FILE.
			wcfg.Tools = tools.Demo()
		}
		m.pool = worker.NewPool(wcfg, m.db, chunkLog, queue, m.hub, events, m.limits, provider)
		if err = m.pool.Start(ctx); err != nil {
			return err
		}
	}
	m.srv, err = server.New(server.Config{
		AuthSecret:      secret,
		AuthDev:         m.cfg.AuthDev,
		DevTokenTTL:     m.cfg.DevTokenTTL,
		MaxContentBytes: m.cfg.MaxContentBytes,
		AllowedHosts:    m.cfg.AllowedHosts,
		TrustedProxies:  m.cfg.TrustedProxies,
		BodyTimeout:     m.cfg.BodyTimeout,
		MaxConnsPerAddr: m.cfg.MaxConnsPerAddr,
		Logger:          m.logger,
		Registry:        m.reg,
		WS:              m.cfg.WS,
		SSE:             m.cfg.SSE,
		OpsOnly:         m.cfg.WorkerOnly,
	}, server.Deps{
		Store:         m.db,
		Generations:   gens,
		Conversations: worker.NewConversations(m.db, chunkLog, events, gens, m.logger),
		Limits:        m.limits,
		Checks:        map[string]server.Pinger{"postgres": m.db, "redis": streaming.Pinger{Client: m.redis}},
		Streams:       streamsAdapter{m.streams},
		Watcher:       m.watch,
		Chats:         m.db,
		Page:          frontend.Files(),
	})
	if err != nil {
		return err
	}
	if m.ln, err = net.Listen("tcp", m.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("listen on %s: %w", m.cfg.HTTPAddr, err)
	}
	// The serving goroutine lives until Shutdown stops the server.
	go func() { m.serveDone <- m.srv.Serve(m.ln) }()
	m.logger.Info("chatstream serving", "addr", m.ln.Addr().String(), "auth_dev", m.cfg.AuthDev)
	return nil
}

// Addr is the address the node listens on; useful with HTTPAddr ":0".
func (m *Main) Addr() net.Addr { return m.ln.Addr() }

// Shutdown stops the node: it refuses new requests and lets in-flight ones
// finish, lets running generations finish until ctx ends (then hands them
// back), and closes the hub, Redis and Postgres.
func (m *Main) Shutdown(ctx context.Context) error {
	var errs []error
	m.closeOnce.Do(func() {
		if m.srv != nil && m.ln != nil {
			if err := m.srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shutdown http: %w", err))
			}
			if err := <-m.serveDone; err != nil {
				errs = append(errs, err)
			}
		}
		if m.pool != nil {
			if err := m.pool.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shutdown workers: %w", err))
			}
			m.pool = nil
		}
		m.closeResources()
	})
	return errors.Join(errs...)
}

// Run starts the node and serves until ctx ends, then shuts down within the
// configured grace period.
func (m *Main) Run(ctx context.Context) error {
	if err := m.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-m.serveDone:
		m.serveDone <- err // Shutdown reports it
	}
	m.logger.Info("chatstream shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.ShutdownGrace)
	defer cancel()
	return m.Shutdown(sctx)
}

func (m *Main) closeResources() {
	if m.pool != nil {
		// Only reached here without a Shutdown when Start failed after
		// starting the pool.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = m.pool.Shutdown(ctx)
		cancel()
	}
	if m.streams != nil {
		m.streams.Close()
	}
	if m.watch != nil {
		m.watch.Close()
	}
	if m.hub != nil {
		m.hub.Close()
	}
	if m.limits != nil {
		m.limits.Close()
	}
	if m.redis != nil {
		m.redis.Close()
	}
	if m.db != nil {
		m.db.Close()
	}
}

// streamsAdapter lets the server follow streams without importing delivery.
type streamsAdapter struct{ s *delivery.Streams }

func (a streamsAdapter) Follow(ctx context.Context, id string, last int64, sink chatstream.Sink) (server.Follow, error) {
	f, err := a.s.Follow(ctx, id, last, sink)
	if err != nil {
		return nil, err
	}
	return f, nil
}
