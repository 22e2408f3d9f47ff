package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/chatstream/chatstream/loadgen"
)

func loadgenCmd(ctx context.Context, args []string, e env, stdout, stderr io.Writer) int {
	fs := newFlags("loadgen", " [flags]", "Load-tests a running server: opens sockets, starts generations on its demo model,\nfollows them, and reports latency, throughput, lost and duplicated chunks, and\nthe server's and Redis's CPU and memory (BENCHMARKS.md has the scenarios).", stdout, stderr)
	var cfg loadgen.Config
	fs.StringVar(&cfg.BaseURL, "url", "http://127.0.0.1:8080", "server base URL")
	fs.StringVar(&cfg.Scenario, "scenario", loadgen.Steady, "steady, fanout, tools, idle, storm, churn or soak")
	fs.IntVar(&cfg.Streams, "streams", 0, "generations (steady/fanout: default 10; churn: streams followed; soak: generations at once)")
	fs.IntVar(&cfg.Followers, "followers", 0, "sockets per stream, the sender included (default 2)")
	fs.IntVar(&cfg.Tokens, "tokens", 0, "tokens per generation (default 200)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "tokens per second per generation (default 30)")
	fs.IntVar(&cfg.Think, "think", 0, "tools: words of reasoning before each answer (default 20)")
	fs.IntVar(&cfg.Sockets, "sockets", 0, "sockets for idle, storm and churn (default 1000)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "time limit of the run (default 60s)")
	fs.DurationVar(&cfg.Ramp, "ramp", 0, "spread the start of generations over this time")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", 0, "sockets opened at once (default 128)")
	fs.BoolVar(&cfg.Spread, "spread", false, "spread client addresses over 127.0.0.0/8 (many sockets)")
	fs.BoolVar(&cfg.SSE, "sse", false, "followers (all but each stream's sender) read over Server-Sent Events instead of WebSockets")
	fs.IntVar(&cfg.Users, "users", 0, "distinct users (default 50)")
	pid := fs.Int("server-pid", 0, "pid of the server to measure (default: find a local 'chatstream serve')")
	redisURL := fs.String("redis-url", e.str("REDIS_URL", ""), "Redis to measure (INFO), if local")
	dbURL := fs.String("database-url", e.str("DATABASE_URL", ""), "Postgres to count transactions of")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	svg := fs.String("svg", "", "write the delivery latency CDF to this SVG file")
	noProbe := fs.Bool("no-probe", false, "do not measure the server's processes")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
	if code, done := parse(fs, args, stdout); done {
		return code
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "chatstream loadgen: cpuprofile: %v\n", err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	cfg.Secret = []byte(e.str("AUTH_SECRET", ""))
	cfg.Progress = stderr
	if !*noProbe {
		p, err := loadgen.NewProbe(*pid, *redisURL, *dbURL)
		if err != nil {
			fmt.Fprintf(stderr, "chatstream loadgen: probe: %v\n", err)
			return 1
		}
		defer p.Close()
		cfg.Probe = p
	}
	rep, err := loadgen.Run(ctx, cfg)
	if rep != nil {
		if *jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			rep.Print(stdout)
		}
		if *svg != "" {
			f, ferr := os.Create(*svg)
			if ferr == nil {
				ferr = rep.WriteSVG(f)
				f.Close()
			}
			if ferr != nil {
				fmt.Fprintf(stderr, "chatstream loadgen: svg: %v\n", ferr)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatstream loadgen: %v\n", err)
		return 1
	}
	if rep.Lost > 0 || rep.Duplicated > 0 {
		fmt.Fprintf(stderr, "chatstream loadgen: %d chunks lost, %d duplicated\n", rep.Lost, rep.Duplicated)
		return 1
	}
	return 0
}

func askCmd(ctx context.Context, args []string, e env, stdout, stderr io.Writer) int {
	fs := newFlags("ask", ` [flags] "question"`, "Asks a running server one question, streams the answer, and prints readiness,\ntime to first chunk, chunks, characters, total time and the gaps between chunks.", stdout, stderr)
	var cfg loadgen.AskConfig
	fs.StringVar(&cfg.BaseURL, "url", "http://127.0.0.1:8080", "server base URL")
	fs.StringVar(&cfg.User, "user", "ask", "user to ask as (dev token, or signed with AUTH_SECRET)")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "time limit")
	jsonOut := fs.Bool("json", false, "print the summary as JSON")
	approve := fs.String("approve", "prompt", "answer to tool calls that ask for approval: prompt (ask on the terminal), yes or no")
	if code, done := parse(fs, args, stdout); done {
		return code
	}
	switch *approve {
	case "yes":
		cfg.Approve = func(string, string) bool { return true }
	case "no":
	case "prompt":
		in := bufio.NewReader(os.Stdin)
		cfg.Approve = func(name, arguments string) bool {
			fmt.Fprintf(stderr, "Run %s %s? [y/N] ", name, arguments)
			line, _ := in.ReadString('\n')
			return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
		}
	default:
		fmt.Fprintln(stderr, "chatstream ask: -approve must be prompt, yes or no")
		return 2
	}
	cfg.Question = strings.Join(fs.Args(), " ")
	if strings.TrimSpace(cfg.Question) == "" {
		fmt.Fprintln(stderr, `usage: chatstream ask [-url URL] "question"`)
		return 2
	}
	cfg.Secret = []byte(e.str("AUTH_SECRET", ""))
	cfg.Answer = stdout
	cfg.Color = isTerminal(stdout)
	res, err := loadgen.Ask(ctx, cfg)
	if res != nil {
		if *jsonOut {
			_ = json.NewEncoder(stderr).Encode(res)
		} else {
			res.Print(stderr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatstream ask: %v\n", err)
		return 1
	}
	return 0
}

// isTerminal reports whether w is a terminal (reasoning is dimmed there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
