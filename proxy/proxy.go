// Package proxy is a small HTTP load balancer for running several API nodes
// behind one address on one machine (`chatstream proxy`, `make
// run-cluster`): round-robin over the backends whose /readyz answers 200,
// WebSocket upgrades and Server-Sent Events passed through unbuffered, and a
// request whose backend refuses the connection tried on the next one. No
// stickiness: any chatstream node serves any stream, and a client that
// loses its node reconnects through the proxy and resumes by its last
// index. It is a demo's balancer, not a production one (docs/DEPLOY.md
// says what to configure in nginx or haproxy instead).
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config configures a Proxy.
type Config struct {
	// Backends are the base URLs of the nodes, e.g. http://127.0.0.1:8081.
	Backends []string
	// CheckInterval is how often each backend's /readyz is asked. Default
	// 500ms.
	CheckInterval time.Duration
	// MaxBody is the largest request body that is kept so that the request
	// can be tried on another backend; a larger one goes to one backend
	// only. Default 1 MiB.
	MaxBody int64
	Logger  *slog.Logger
}

// Proxy is an http.Handler that balances requests over backends.
type Proxy struct {
	cfg      Config
	backends []*backend
	next     atomic.Uint64
	client   *http.Client
	logger   *slog.Logger
}

type backend struct {
	url   *url.URL
	proxy *httputil.ReverseProxy
	up    atomic.Bool
}

// New returns a proxy over cfg.Backends; every backend counts as up until
// its first check says otherwise.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Backends) == 0 {
		return nil, errors.New("proxy: no backends")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 500 * time.Millisecond
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, logger: cfg.Logger, client: &http.Client{Timeout: 2 * time.Second}}
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	for _, raw := range cfg.Backends {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("proxy: backend %q is not an http(s) URL", raw)
		}
		b := &backend{url: u}
		b.up.Store(true)
		b.proxy = &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(u)
				r.SetXForwarded()
				r.Out.Host = r.In.Host // the node checks the Host the browser used
			},
			Transport: transport,
			// -1: every write is flushed at once (SSE, streamed bodies).
			FlushInterval: -1,
			ErrorHandler:  p.failed,
		}
		p.backends = append(p.backends, b)
	}
	return p, nil
}

// Run checks the backends' readiness every CheckInterval until ctx ends.
func (p *Proxy) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.CheckInterval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, b := range p.backends {
			wg.Add(1)
			go func() { defer wg.Done(); p.check(ctx, b) }()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Proxy) check(ctx context.Context, b *backend) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.url.JoinPath("/readyz").String(), nil)
	res, err := p.client.Do(req)
	up := err == nil && res.StatusCode == http.StatusOK
	if err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	if ctx.Err() != nil {
		return
	}
	if was := b.up.Swap(up); was != up {
		p.logger.Info("proxy: backend changed", "backend", b.url.String(), "up", up)
	}
}

// ctxKey carries a try's attempt to the error handler.
type ctxKey struct{}

// attempt is one try of a request: whether another try follows it, and
// whether the backend refused it (the error handler fills that in; a
// refused connection reached nothing, so another backend may take it).
type attempt struct{ last, refused bool }

// ServeHTTP sends the request to the next backend that is up, and to the
// one after that when the connection is refused.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A body is kept, up to MaxBody, so that a retry can send it again.
	var body []byte
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength <= p.cfg.MaxBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, p.cfg.MaxBody+1))
		if err != nil {
			http.Error(w, `{"error":{"code":"bad_request","message":"The request body could not be read."}}`, http.StatusBadRequest)
			return
		}
		if int64(len(b)) <= p.cfg.MaxBody {
			body = b
		} else {
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), r.Body))
		}
	}
	order := p.order()
	for i, b := range order {
		// A body too large to keep goes to one backend only.
		a := &attempt{last: i == len(order)-1 || (body == nil && r.Body != nil && r.Body != http.NoBody)}
		req := r.WithContext(context.WithValue(r.Context(), ctxKey{}, a))
		if body != nil {
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.ContentLength = int64(len(body))
			// With GetBody the transport itself sends the request again
			// on a fresh connection when a kept-alive one turns out dead
			// before anything was written (a node that just crashed).
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		b.proxy.ServeHTTP(w, req)
		if !a.refused || a.last {
			return
		}
		b.up.Store(false) // the next check decides again
	}
}

// order is the backends to try: those up, starting at the next in turn,
// then those down (a check may be stale; a refused one is skipped quickly).
func (p *Proxy) order() []*backend {
	n := len(p.backends)
	start := int(p.next.Add(1) % uint64(n))
	out := make([]*backend, 0, n)
	for _, up := range []bool{true, false} {
		for i := range n {
			if b := p.backends[(start+i)%n]; b.up.Load() == up {
				out = append(out, b)
			}
		}
	}
	return out
}

// failed answers a request the backend did not: a refused connection on a
// try that is not the last is left to the next backend; anything else is
// 502 in the API's error shape.
func (p *Proxy) failed(w http.ResponseWriter, r *http.Request, err error) {
	if a, ok := r.Context().Value(ctxKey{}).(*attempt); ok && refused(err) {
		a.refused = true
		if !a.last {
			return // the next backend answers
		}
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	p.logger.Warn("proxy: backend failed", "path", r.URL.Path, "err", err)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusBadGateway)
	_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"No node could answer; try again."}}`))
}

// refused reports whether err means the backend took nothing: the
// connection was refused or could not be made, the node had closed the
// kept-alive connection before the request went out on it (net/http's
// "server closed idle connection", which has no exported sentinel), or the
// request could not be written whole (a broken pipe, or the transport
// closing the connection under the write on seeing the node's close: the
// node closed a kept-alive connection before it had the request, as a
// crashed one does — a node that read the whole request leaves the write
// complete).
func refused(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) {
		switch op.Op {
		case "dial":
			return true
		case "write", "readfrom":
			if errors.Is(err, net.ErrClosed) {
				return true
			}
		}
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "server closed idle connection")
}
