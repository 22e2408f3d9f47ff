// Package server serves chatstream's HTTP API and WebSocket endpoint with Gin.
// It maps domain errors to HTTP statuses and error frames; nothing else does.
package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Store is what the server needs of the Postgres store.
type Store interface {
	Ping(ctx context.Context) error
	CreateConversation(ctx context.Context, userID, title string) (*chatstream.Conversation, error)
	FindConversation(ctx context.Context, userID, id string) (*chatstream.Conversation, error)
	// ListConversations pages through a user's conversations, newest
	// first; before is a page's NextCursor (empty: the first page).
	ListConversations(ctx context.Context, userID string, limit int, before string) (*chatstream.ConversationPage, error)
	// BranchPage returns the conversation and the newest limit messages of
	// its current branch older than message before (empty: from its leaf).
	BranchPage(ctx context.Context, userID, convID, before string, limit int) (*chatstream.Conversation, *chatstream.MessagePage, error)
}

// Conversations changes whole conversations.
type Conversations interface {
	Update(ctx context.Context, userID, id string, ch chatstream.ConversationChange) (*chatstream.Conversation, error)
	Delete(ctx context.Context, userID, id string) error
}

// Generations starts and stops generations.
type Generations interface {
	// Start stores a send, edit or regenerate and queues its answer.
	Start(ctx context.Context, t chatstream.Turn) (*chatstream.Started, error)
	Cancel(ctx context.Context, userID, streamID string) error
	// Approve answers a tool call of stream streamID that waits for the
	// user's approval.
	Approve(ctx context.Context, userID, streamID, callID string, approved bool) error
	// Authorize returns nil if userID may follow stream streamID, else a
	// not_found error.
	Authorize(ctx context.Context, userID, streamID string) error
}

// Limits are the per-user (and per-address) limits the server checks; a
// refusal is a rate_limited error.
type Limits interface {
	// AcquireSocket counts a socket of user; release is called once it closes.
	AcquireSocket(ctx context.Context, user string) (release func(), err error)
	// AllowDevToken counts a dev token for the client address addr.
	AllowDevToken(ctx context.Context, addr string) error
	// AllowConversation counts a conversation created by user.
	AllowConversation(ctx context.Context, user string) error
}

// noLimits holds nothing back.
type noLimits struct{}

func (noLimits) AcquireSocket(context.Context, string) (func(), error) { return func() {}, nil }
func (noLimits) AllowDevToken(context.Context, string) error           { return nil }
func (noLimits) AllowConversation(context.Context, string) error       { return nil }

// Deps are the server's collaborators.
type Deps struct {
	Store         Store
	Generations   Generations
	Conversations Conversations
	// Limits are checked before sockets, dev tokens and conversations are
	// made; nil for none.
	Limits Limits
	// Checks are the dependencies /readyz pings, by name.
	Checks map[string]Pinger
	// Streams and Watcher serve the WebSocket; without them /v1/ws is not routed.
	Streams Streams
	Watcher Watcher
	// Chats map the AI SDK's chat ids onto conversations; without them (or
	// Streams) the AI SDK routes are not routed.
	Chats Chats
	// Page is the web page's files (index.html and its assets); nil for none.
	Page fs.FS
}

// Pinger checks that a dependency answers; /readyz asks each.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config tunes the server. Zero values take the defaults.
type Config struct {
	// AuthSecret is the HS256 key of access tokens. Required.
	AuthSecret []byte
	// AuthDev enables POST /v1/auth/dev-token.
	AuthDev bool
	// DevTokenTTL is the lifetime of dev tokens. Default 24h.
	DevTokenTTL time.Duration
	// MaxContentBytes is the largest user message. Default
	// DefaultMaxContentBytes.
	MaxContentBytes int
	// TrustedProxies are the proxies (addresses or CIDR prefixes) whose
	// X-Forwarded-For is believed, and whose connections are not capped by
	// MaxConnsPerAddr. Default none.
	TrustedProxies []string
	// BodyTimeout bounds how long a request body may take to arrive.
	// Default DefaultBodyTimeout.
	BodyTimeout time.Duration
	// AllowedHosts are the Host names (or "*.example.com") served; others
	// get 400. Default: the loopback names with AuthDev, else any host.
	AllowedHosts []string
	// MaxConnsPerAddr caps the open connections of one client address;
	// 0 takes the default 512, negative turns the cap off.
	MaxConnsPerAddr int
	// ReadyTimeout bounds each dependency check of /readyz. Default 2s.
	ReadyTimeout time.Duration
	// Logger receives the request log. Default: discard.
	Logger *slog.Logger
	// Registry is where the server's metrics are registered. Default: a new
	// registry with the Go and process collectors.
	Registry *prometheus.Registry
	// WS tunes the WebSocket endpoint.
	WS WSConfig
	// SSE tunes the Server-Sent Events routes.
	SSE SSEConfig
	// OpsOnly serves /healthz, /readyz and /metrics alone: no API, no
	// sockets, no page (a worker-only node, ROLES=worker).
	OpsOnly bool
}

// WSConfig tunes the WebSocket endpoint. Zero values take the defaults.
type WSConfig = wsConfig

func (c *Config) setDefaults() {
	if c.DevTokenTTL <= 0 {
		c.DevTokenTTL = 24 * time.Hour
	}
	if c.MaxContentBytes <= 0 {
		c.MaxContentBytes = DefaultMaxContentBytes
	}
	if c.WS.ReadLimit <= 0 {
		c.WS.ReadLimit = ReadLimit(c.MaxContentBytes)
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 2 * time.Second
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if len(c.AllowedHosts) == 0 && c.AuthDev {
		c.AllowedHosts = loopbackHosts
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = NewRegistry()
	}
	c.WS.setDefaults()
	c.SSE.setDefaults(c.WS)
}

// Defaults of Config.
const (
	// DefaultMaxConnsPerAddr caps one client address's open connections.
	DefaultMaxConnsPerAddr = 512
	// DefaultMaxContentBytes is the largest user message.
	DefaultMaxContentBytes = 32768
	// DefaultBodyTimeout bounds how long a request body may take to arrive.
	DefaultBodyTimeout = 10 * time.Second
)

// ReadLimit is the largest client frame for a largest message of
// maxContent bytes: a client may escape every byte of it as six (\u00XX),
// plus 1 KiB for the rest of the frame. Never below 64 KiB, never above 1 MiB.
func ReadLimit(maxContent int) int64 {
	return min(1<<20, max(64<<10, 6*int64(maxContent)+1024))
}

// MaxContentLimit is the largest MaxContentBytes whose messages always fit
// the 1 MiB a frame may have, however they are escaped.
const MaxContentLimit = ((1 << 20) - 1024) / 6

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server is the HTTP API of one node.
type Server struct {
	cfg     Config
	store   Store
	gens    Generations
	convs   Conversations
	limits  Limits
	streams Streams
	watcher Watcher
	chats   Chats
	sockets sockets
	page    fs.FS
	checks  map[string]Pinger
	logger  *slog.Logger
	engine  *gin.Engine
	metrics *httpMetrics
	http    *http.Server
	hosts   []string       // AllowedHosts, lower case; nil: any
	trusted []netip.Prefix // TrustedProxies
	closing chan struct{}  // closed when Shutdown starts: SSE responses end
}

// New returns a server over its dependencies.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.setDefaults()
	if len(cfg.AuthSecret) == 0 {
		return nil, errors.New("server: AuthSecret is required")
	}
	s := &Server{cfg: cfg, store: deps.Store, gens: deps.Generations, convs: deps.Conversations, limits: deps.Limits, checks: deps.Checks, logger: cfg.Logger,
		streams: deps.Streams, watcher: deps.Watcher, chats: deps.Chats, closing: make(chan struct{})}
	if s.limits == nil {
		s.limits = noLimits{}
	}
	s.sockets.open = make(map[*session]struct{})
	s.sockets.writeTimeout = cfg.WS.WriteTimeout
	s.sockets.pingInterval = cfg.WS.PingInterval
	s.metrics = newHTTPMetrics(cfg.Registry)
	for _, h := range cfg.AllowedHosts {
		s.hosts = append(s.hosts, strings.ToLower(strings.Trim(h, "[]")))
	}
	for _, p := range cfg.TrustedProxies {
		prefix, err := parsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", p, err)
		}
		s.trusted = append(s.trusted, prefix)
	}
	if err := s.routes(deps.Page); err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.engine,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	// Shutdown neither closes nor waits for hijacked connections.
	s.http.RegisterOnShutdown(s.sockets.closeAll)
	// Nor does it end long responses: SSE readers resume elsewhere.
	var closeOnce sync.Once
	s.http.RegisterOnShutdown(func() { closeOnce.Do(func() { close(s.closing) }) })
	return s, nil
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

// Serve accepts connections on ln until Shutdown. It returns nil after a
// graceful shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.cfg.MaxConnsPerAddr > 0 {
		ln = newCapListener(ln, s.cfg.MaxConnsPerAddr, s.trusted, s.metrics.connsRefused)
	}
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections, closes every WebSocket with 1001,
// and waits for in-flight requests and the sockets' goroutines until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.sockets.closeAll() // also when the server never served
	return errors.Join(err, s.sockets.wait(ctx))
}

func (s *Server) routes(page fs.FS) error {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.ContextWithFallback = true
	if err := e.SetTrustedProxies(s.cfg.TrustedProxies); err != nil {
		return fmt.Errorf("trusted proxies: %w", err)
	}
	e.Use(s.requestID, s.accessLog, s.recoverPanic, s.allowedHost, s.bodyDeadline)
	e.NoRoute(func(c *gin.Context) {
		if s.page != nil && wantsPage(c.Request) {
			s.servePage(c)
			return
		}
		writeError(c, chatstream.Errorf(chatstream.ENOTFOUND, "No such endpoint."))
	})
	if page != nil && !s.cfg.OpsOnly {
		s.routePage(e, page)
	}
	e.NoMethod(func(c *gin.Context) {
		writeStatus(c, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, "Method not allowed on this endpoint.")
	})

	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", s.handleReady)
	e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})))
	if s.cfg.OpsOnly {
		s.engine = e
		return nil
	}

	v1 := e.Group("/v1")
	v1.GET("/openapi.json", s.handleOpenAPI)
	if s.cfg.AuthDev {
		v1.POST("/auth/dev-token", s.handleDevToken)
	}
	authed := v1.Group("", s.authenticate)
	authed.POST("/conversations", s.handleCreateConversation)
	authed.GET("/conversations", s.handleListConversations)
	authed.GET("/conversations/:id", s.handleGetConversation)
	authed.PATCH("/conversations/:id", s.handleUpdateConversation)
	authed.DELETE("/conversations/:id", s.handleDeleteConversation)
	authed.GET("/conversations/:id/messages", s.handleListMessages)
	authed.POST("/conversations/:id/messages", s.handleSendMessage)
	authed.POST("/messages/:id/regenerate", s.handleRegenerate)
	authed.POST("/messages/:id/edit", s.handleEdit)
	authed.POST("/streams/:stream_id/cancel", s.handleCancel)
	authed.POST("/streams/:stream_id/approvals", s.handleApprove)
	if s.streams != nil && s.watcher != nil {
		v1.GET("/ws", s.authenticateUpgrade, s.handleWS)
		v1.GET("/streams/:stream_id/events", s.authenticateUpgrade, s.handleStreamEvents)
		v1.GET("/conversations/:id/events", s.authenticateUpgrade, s.handleConversationEvents)
	}
	if s.streams != nil && s.chats != nil {
		authed.POST("/ai-sdk/chat", s.handleAIChat)
		authed.GET("/ai-sdk/chat/:id/stream", s.handleAIChatStream)
	}
	s.engine = e
	return nil
}

// parsePrefix reads an address or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func (s *Server) handleReady(c *gin.Context) {
	failed := map[string]string{}
	for name, p := range s.checks {
		ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.ReadyTimeout)
		err := p.Ping(ctx)
		cancel()
		if err != nil {
			s.logger.Warn("readiness check failed", "dependency", name, "err", err)
			failed[name] = "unavailable"
		}
	}
	if len(failed) > 0 {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": gin.H{
			"code": chatstream.EUNAVAILABLE, "message": "A dependency does not answer.", "dependencies": failed,
		}})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}
