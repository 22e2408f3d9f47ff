package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream/streaming"
)

// Probe measures the processes behind the server while a run goes: CPU time
// and resident memory of the server and of Redis (read from /proc, so only
// when they run on this machine), Redis commands, and Postgres transactions.
type Probe struct {
	ServerPID   int
	RedisPID    int
	redis       rueidis.Client
	databaseURL string

	mu      sync.Mutex
	peakRSS int64
	stop    chan struct{} // closed by Stop; ends the sampler
	done    chan struct{} // closed when the sampler ended
	start   probeSample
}

// ProbeResult is what a probe measured between Start and Stop.
type ProbeResult struct {
	ServerCPUSeconds  float64 `json:"server_cpu_seconds"`
	RedisCPUSeconds   float64 `json:"redis_cpu_seconds"`
	LoadgenCPUSeconds float64 `json:"loadgen_cpu_seconds"`
	ServerRSSStart    int64   `json:"server_rss_start_bytes"`
	ServerRSSEnd      int64   `json:"server_rss_end_bytes"`
	ServerRSSPeak     int64   `json:"server_rss_peak_bytes"`
	RedisCommands     int64   `json:"redis_commands"`
	RedisScriptCalls  int64   `json:"redis_script_calls"`
	RedisPublishes    int64   `json:"redis_publishes"`
	PostgresXacts     int64   `json:"postgres_transactions"`
}

type probeSample struct {
	serverCPU, redisCPU, selfCPU float64
	serverRSS                    int64
	redisCmds, redisScripts      int64
	redisPublishes               int64
	pgXacts                      int64
}

// NewProbe measures the server process serverPID (0: find a local process
// running "chatstream serve"), the Redis at redisURL and the Postgres at
// databaseURL (either may be empty).
func NewProbe(serverPID int, redisURL, databaseURL string) (*Probe, error) {
	p := &Probe{ServerPID: serverPID, databaseURL: databaseURL}
	if p.ServerPID == 0 {
		p.ServerPID = findServe()
	}
	if redisURL != "" {
		c, err := streaming.NewClient(redisURL, streaming.ClientConfig{})
		if err != nil {
			return nil, err
		}
		p.redis = c
		if u, err := url.Parse(redisURL); err == nil && isLoopback(u.Hostname()) {
			info, _ := c.Do(context.Background(), c.B().Info().Section("server").Build()).ToString()
			p.RedisPID = int(infoInt(info, "process_id"))
		}
	}
	return p, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

// findServe returns the pid of a local `chatstream serve`, or 0.
func findServe() int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) >= 2 && filepath.Base(args[0]) == "chatstream" && args[1] == "serve" {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			return pid
		}
	}
	return 0
}

// Start takes the first sample and samples the server's memory every 100ms.
func (p *Probe) Start() {
	p.start = p.sample()
	p.peakRSS = p.start.serverRSS
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	// The sampler lives until Stop.
	go func() {
		defer close(p.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if rss := rssOf(p.ServerPID); rss > 0 {
					p.mu.Lock()
					p.peakRSS = max(p.peakRSS, rss)
					p.mu.Unlock()
				}
			}
		}
	}()
}

// Stop ends sampling and returns the differences since Start.
func (p *Probe) Stop() ProbeResult {
	close(p.stop)
	<-p.done
	end := p.sample()
	p.mu.Lock()
	defer p.mu.Unlock()
	return ProbeResult{
		ServerCPUSeconds:  end.serverCPU - p.start.serverCPU,
		RedisCPUSeconds:   end.redisCPU - p.start.redisCPU,
		LoadgenCPUSeconds: end.selfCPU - p.start.selfCPU,
		ServerRSSStart:    p.start.serverRSS,
		ServerRSSEnd:      end.serverRSS,
		ServerRSSPeak:     max(p.peakRSS, end.serverRSS),
		RedisCommands:     end.redisCmds - p.start.redisCmds,
		RedisScriptCalls:  end.redisScripts - p.start.redisScripts,
		RedisPublishes:    end.redisPublishes - p.start.redisPublishes,
		PostgresXacts:     end.pgXacts - p.start.pgXacts,
	}
}

// Close releases the probe's Redis client.
func (p *Probe) Close() {
	if p.redis != nil {
		p.redis.Close()
	}
}

// RedisMemory returns the memory Redis holds (INFO memory used_memory),
// 0 if unknown.
func (p *Probe) RedisMemory() int64 {
	if p.redis == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := p.redis.Do(ctx, p.redis.B().Info().Section("memory").Build()).ToString()
	if err != nil {
		return 0
	}
	return infoInt(info, "used_memory")
}

// RSS returns the server's resident memory now.
func (p *Probe) RSS() int64 { return rssOf(p.ServerPID) }

func (p *Probe) sample() probeSample {
	var s probeSample
	s.serverCPU = cpuOf(p.ServerPID)
	s.redisCPU = cpuOf(p.RedisPID)
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.selfCPU = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	s.serverRSS = rssOf(p.ServerPID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if p.redis != nil {
		if info, err := p.redis.Do(ctx, p.redis.B().Info().Section("stats").Build()).ToString(); err == nil {
			s.redisCmds = infoInt(info, "total_commands_processed")
		}
		if info, err := p.redis.Do(ctx, p.redis.B().Info().Section("commandstats").Build()).ToString(); err == nil {
			s.redisScripts = cmdCalls(info, "evalsha") + cmdCalls(info, "eval")
			s.redisPublishes = cmdCalls(info, "publish") + cmdCalls(info, "spublish")
		}
	}
	if p.databaseURL != "" {
		if conn, err := pgx.Connect(ctx, p.databaseURL); err == nil {
			_ = conn.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.pgXacts)
			conn.Close(ctx)
		}
	}
	return s
}

// cpuOf returns a process's user+system CPU seconds from /proc.
func cpuOf(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// rssOf returns a process's resident memory in bytes.
func rssOf(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func infoInt(info, key string) int64 {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// cmdCalls reads calls=N of one command from INFO commandstats.
func cmdCalls(info, cmd string) int64 {
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest+",", ',')], 10, 64)
			return n
		}
	}
	return 0
}
