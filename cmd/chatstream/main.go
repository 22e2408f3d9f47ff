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
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chatstream/chatstream/app"
)

func main() {
	os.Exit(run(os.Args[1:], osEnv(), os.Stdout, os.Stderr))
}

// commands are the binary's commands, as help lists them.
var commands = []struct{ name, summary string }{
	{"serve", "run the HTTP/WebSocket API, the hub and the generation workers"},
	{"migrate", "apply the Postgres migrations and exit"},
	{"ask", "ask a running server one question; print the answer and how it streamed"},
	{"loadgen", "load-test a running server (scenarios in BENCHMARKS.md)"},
	{"proxy", "balance HTTP, WebSocket and SSE over several nodes (make run-cluster)"},
	{"help", "print this help"},
}

// usage is the binary's help.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: chatstream <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-8s  %s\n", c.name, c.summary)
	}
	b.WriteString("\n'chatstream <command> -h' lists a command's flags. Configuration comes\nfrom the environment (see README.md).\n")
	return b.String()
}

// run is main without the process: it returns the exit code.
func run(args []string, e env, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := newLogger(stderr, e)
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], e, logger, stdout, stderr)
	case "migrate":
		return migrate(ctx, args[1:], e, logger, stdout, stderr)
	case "loadgen":
		return loadgenCmd(ctx, args[1:], e, stdout, stderr)
	case "ask":
		return askCmd(ctx, args[1:], e, stdout, stderr)
	case "proxy":
		return proxyCmd(ctx, args[1:], logger, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage())
		return 0
	}
	fmt.Fprintf(stderr, "chatstream: unknown command %q\n\n%s", args[0], usage())
	return 2
}

// newFlags returns the flag set of a command: its usage says what the
// command does, and -h prints it to stdout.
func newFlags(name, args, what string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: chatstream %s%s\n\n%s\n", name, args, what)
		if hasFlags(fs) {
			fmt.Fprintln(fs.Output(), "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses a command's flags; done says the command must return code
// (2 for bad flags, 0 after -h printed its usage to stdout).
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, done bool) {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return 0, true
	case err != nil:
		fmt.Fprintf(out, "chatstream %s: %v\n", fs.Name(), err)
		fs.Usage()
		return 2, true
	}
	return 0, false
}

// defaultLogLevel is LOG_LEVEL's default.
const defaultLogLevel = "info"

func newLogger(w io.Writer, e env) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(e.str("LOG_LEVEL", defaultLogLevel)))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func serve(ctx context.Context, args []string, e env, logger *slog.Logger, stdout, stderr io.Writer) int {
	fs := newFlags("serve", " [flags]", "Runs the HTTP/WebSocket API, the hub and the generation workers until SIGINT or\nSIGTERM; applies the Postgres migrations at start.", stdout, stderr)
	httpAddr := fs.String("http-addr", "", "listen address (default HTTP_ADDR, else "+app.DefaultHTTPAddr+")")
	if code, done := parse(fs, args, stdout); done {
		return code
	}
	cfg, err := loadConfig(e)
	if err != nil {
		fmt.Fprintf(stderr, "chatstream: config: %v\n", err)
		return 2
	}
	if *httpAddr != "" {
		cfg.HTTPAddr = *httpAddr
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

func migrate(ctx context.Context, args []string, e env, logger *slog.Logger, stdout, stderr io.Writer) int {
	fs := newFlags("migrate", "", "Applies the Postgres migrations (DATABASE_URL) under an advisory lock and exits.", stdout, stderr)
	if code, done := parse(fs, args, stdout); done {
		return code
	}
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
