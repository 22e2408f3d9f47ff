package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatstream/chatstream/protocol"
)

const (
	requestIDHeader = "X-Request-ID"
	ctxRequestID    = "request_id"
)

// requestID gives every request an id: the client's X-Request-ID when it is
// short and printable, else a new one. It is echoed in the response header.
func (s *Server) requestID(c *gin.Context) {
	id := c.GetHeader(requestIDHeader)
	if !validRequestID(id) {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
	}
	c.Set(ctxRequestID, id)
	c.Header(requestIDHeader, id)
	c.Next()
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// accessLog logs one line per request and records the HTTP metrics. It logs
// the path only: the query may hold an access token.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	status := c.Writer.Status()
	elapsed := time.Since(start)
	s.metrics.requests.WithLabelValues(c.Request.Method, route, strconv.Itoa(status)).Inc()
	s.metrics.duration.WithLabelValues(c.Request.Method, route).Observe(elapsed.Seconds())
	if c.IsWebsocket() && status == http.StatusSwitchingProtocols {
		return // the socket logs its own end
	}
	attrs := []any{
		"request_id", c.GetString(ctxRequestID),
		"method", c.Request.Method,
		"path", c.Request.URL.Path,
		"status", status,
		"duration_ms", float64(elapsed.Microseconds()) / 1000,
		"remote", c.ClientIP(),
	}
	if u := c.GetString(ctxUser); u != "" {
		attrs = append(attrs, "user", u)
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	if len(c.Errors) > 0 {
		attrs = append(attrs, "err", c.Errors.Last().Err)
	}
	s.logger.Log(c.Request.Context(), level, "http request", attrs...)
}

// recoverPanic turns a handler panic into a 500 in the error shape.
func (s *Server) recoverPanic(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v) // net/http's way to abort a response; not a bug
			}
			s.metrics.panics.Inc()
			s.logger.Error("panic serving a request", "request_id", c.GetString(ctxRequestID), "panic", v, "stack", string(debug.Stack()))
			writeStatus(c, http.StatusInternalServerError, protocol.CodeInternal, "Internal error.")
		}
	}()
	c.Next()
}

type httpMetrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	socketsOpen prometheus.Gauge
	wsErrors    *prometheus.CounterVec
	panics      prometheus.Counter
	// connsRefused counts connections closed at once for MaxConnsPerAddr.
	connsRefused prometheus.Counter
	sseOpen      prometheus.Gauge
	sseSlow      prometheus.Counter
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatstream_http_requests_total",
			Help: "HTTP requests by method, route and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatstream_http_request_duration_seconds",
			Help:    "HTTP request latency by method and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route"}),
		socketsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatstream_websockets_open",
			Help: "Open WebSocket connections.",
		}),
		wsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatstream_websocket_errors_total",
			Help: "WebSocket error frames and abnormal closes, by code.",
		}, []string{"code"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_server_panics_total",
			Help: "Panics recovered while serving a request or a socket frame.",
		}),
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_connections_refused_total",
			Help: "Connections closed at once because their client address had MAX_CONNS_PER_ADDR open.",
		}),
		sseSlow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_sse_slow_readers_total",
			Help: "SSE readers disconnected because their queue filled (they resume by Last-Event-ID).",
		}),
		sseOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatstream_sse_open",
			Help: "Open Server-Sent Events responses (streams and conversations).",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.socketsOpen, m.wsErrors, m.panics, m.connsRefused, m.sseOpen, m.sseSlow)
	return m
}
