package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RedisServer is a redis-server process owned by a test, with an append-only
// file synced on every write, so that a killed server restarts with every
// write it acknowledged. It is killed when the test ends.
type RedisServer struct {
	tb     testing.TB
	bin    string
	dir    string
	port   int
	args   []string // extra arguments of redis-server
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process exited
}

// StartRedisServer starts a private redis-server on a free loopback port.
func StartRedisServer(tb testing.TB) *RedisServer {
	tb.Helper()
	return startRedisServer(tb)
}

func startRedisServer(tb testing.TB, args ...string) *RedisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatal("redis-server not found: `make test` installs it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r := &RedisServer{tb: tb, bin: bin, dir: tb.TempDir(), port: port, args: args}
	r.Start()
	tb.Cleanup(func() {
		if r.cmd != nil {
			r.Kill()
		}
	})
	return r
}

// URL is the server's redis:// URL.
func (r *RedisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// Log returns what the server logged.
func (r *RedisServer) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return string(b)
}

// Start starts the server (again, on the same port and data) and waits
// until it answers PING.
func (r *RedisServer) Start() {
	r.tb.Helper()
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log")}, r.args...)
	cmd := exec.Command(r.bin, args...)
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("start redis-server: %v", err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	exited := r.exited
	// The waiter lives until the process exits.
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for !r.Ping() {
		select {
		case <-exited:
			r.tb.Fatalf("redis-server exited at start:\n%s", r.Log())
		default:
		}
		if time.Now().After(deadline) {
			r.tb.Fatal("redis-server does not answer PING after 10 s")
		}
		time.Sleep(10 * time.Millisecond) // polling for PING, bounded above
	}
}

// Ping reports whether the server answers PING.
func (r *RedisServer) Ping() bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// Kill kills the server with SIGKILL and waits for the process to exit.
func (r *RedisServer) Kill() {
	r.tb.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.tb.Fatal("redis-server did not exit 10 s after SIGKILL")
	}
	r.cmd = nil
}

// Do runs one command on the server and returns its raw RESP answer lines.
func (r *RedisServer) Do(args ...string) []string {
	r.tb.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), time.Second)
	if err != nil {
		r.tb.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		r.tb.Fatal(err)
	}
	br := bufio.NewReader(c)
	var lines []string
	var readValue func()
	readValue = func() {
		line, err := br.ReadString('\n')
		if err != nil {
			r.tb.Fatalf("%v: %v", args, err)
		}
		line = strings.TrimSuffix(line, "\r\n")
		switch line[0] {
		case '*':
			n, _ := strconv.Atoi(line[1:])
			for range n {
				readValue()
			}
		case '$':
			n, _ := strconv.Atoi(line[1:])
			if n < 0 {
				lines = append(lines, "")
				return
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(br, buf); err != nil {
				r.tb.Fatal(err)
			}
			lines = append(lines, string(buf[:n]))
		case '-':
			r.tb.Fatalf("%v: %s", args, line)
		default: // +simple string, :integer
			lines = append(lines, line[1:])
		}
	}
	readValue()
	return lines
}
