package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/chatstream/chatstream/proxy"
)

// backendList is a repeatable -backend flag.
type backendList []string

func (l *backendList) String() string { return strings.Join(*l, ",") }
func (l *backendList) Set(v string) error {
	for _, b := range strings.Split(v, ",") {
		if b = strings.TrimSpace(b); b != "" {
			*l = append(*l, b)
		}
	}
	return nil
}

func proxyCmd(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) int {
	fs := newFlags("proxy", " -backend URL [-backend URL …] [flags]", "Balances HTTP, WebSocket and SSE requests over the API nodes whose /readyz\nanswers 200 (round-robin, no stickiness; a refused connection is tried on the\nnext node). For running several nodes on one machine (make run-cluster).", stdout, stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "listen address")
	var backends backendList
	fs.Var(&backends, "backend", "a node's base URL, e.g. http://127.0.0.1:8081 (repeat, or separate with commas)")
	interval := fs.Duration("check-interval", 500*time.Millisecond, "how often each node's /readyz is asked")
	if code, done := parse(fs, args, stdout); done {
		return code
	}
	p, err := proxy.New(proxy.Config{Backends: backends, CheckInterval: *interval, Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "chatstream proxy: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "chatstream proxy: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.Run(ctx)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // hijacked sockets are the nodes' to end
	}()
	logger.Info("chatstream proxy serving", "addr", ln.Addr().String(), "backends", backends.String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "chatstream proxy: %v\n", err)
		return 1
	}
	return 0
}
