// Command chatstream streams LLM answers to WebSocket clients.
//
//	chatstream serve     run the HTTP/WebSocket API, the hub and the workers
//	chatstream migrate   apply the Postgres migrations and exit
//	chatstream ask       ask a running server one question
//	chatstream loadgen   load-test a running server
//
// Configuration comes from the environment; see the README.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/chatstream/chatstream/app"
)

func main() {
	os.Exit(run(os.Args[1:], osEnv(), os.Stdout, os.Stderr))
}

const usage = `usage: chatstream <command> [flags]

commands:
  serve     run the HTTP/WebSocket API, the hub and the generation workers
  migrate   apply the Postgres migrations and exit

Configuration comes from the environment (see README.md).
`

// run is main without the process: it returns the exit code.
func run(args []string, e env, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := newLogger(stderr, e)
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], e, logger, stderr)
	case "migrate":
		return migrate(ctx, e, logger, stderr)
	case "loadgen":
		return loadgenCmd(ctx, args[1:], e, stdout, stderr)
	case "ask":
		return askCmd(ctx, args[1:], e, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "chatstream: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// defaultLogLevel is LOG_LEVEL's default.
const defaultLogLevel = "info"

func newLogger(w io.Writer, e env) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(e.str("LOG_LEVEL", defaultLogLevel)))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func serve(ctx context.Context, args []string, e env, logger *slog.Logger, stderr io.Writer) int {
	cfg, err := loadConfig(e)
	if err != nil {
		fmt.Fprintf(stderr, "chatstream: config: %v\n", err)
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "listen address (HTTP_ADDR)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Logger = logger
	if addr := e.str("PPROF_ADDR", ""); addr != "" {
		stop, err := servePprof(addr, logger)
		if err != nil {
			fmt.Fprintf(stderr, "chatstream: config: PPROF_ADDR: %v\n", err)
			return 2
		}
		defer stop()
	}
	if err := app.New(cfg).Run(ctx); err != nil {
		logger.Error("chatstream stopped", "err", err)
		return 1
	}
	return 0
}

func migrate(ctx context.Context, e env, logger *slog.Logger, stderr io.Writer) int {
	url, err := e.url("DATABASE_URL", app.DefaultDatabaseURL, "postgres", "postgresql")
	if err != nil {
		fmt.Fprintf(stderr, "chatstream: config: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := app.Migrate(ctx, url, logger); err != nil {
		logger.Error("migrate", "err", err)
		return 1
	}
	logger.Info("migrations applied")
	return 0
}
