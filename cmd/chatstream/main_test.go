package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatstream/chatstream/internal/testenv"
)

// TestMain lets the tests run this package's main as a process of its own:
// with CHATSTREAM_MAIN=1 the test binary is the chatstream binary.
func TestMain(m *testing.M) {
	if os.Getenv("CHATSTREAM_MAIN") == "1" {
		os.Exit(run(os.Args[1:], osEnv(), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestServe_SIGTERMShutsDownGracefully(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := exec.Command(os.Args[0], "serve")
	cmd.Env = append(os.Environ(), "CHATSTREAM_MAIN=1", "HTTP_ADDR="+addr, "AUTH_DEV=true",
		"DATABASE_URL="+testenv.NewDatabase(t), "REDIS_URL="+testenv.RedisURL(t),
		"REDIS_KEY_PREFIX="+testenv.Namespace(t), "WORKERS=2", "SHUTDOWN_GRACE=5s")
	var logs testenv.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the process has exited, with its error in waitErr.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	// Ready: poll /readyz while the process starts (bounded).
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30 s; logs:\n%s", logs.String())
		}
		select {
		case <-exited:
			t.Fatalf("exited early: %v; logs:\n%s", waitErr, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}

	// A socket is open when the signal comes: it is closed with 1001.
	res, err := http.Post("http://"+addr+"/v1/auth/dev-token", "application/json", strings.NewReader(`{"user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	if err := decodeJSON(res, &tok); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/ws?access_token="+tok.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, _, err = conn.Read(ctx)
	if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
		t.Fatalf("socket closed with %v (%v), want 1001 going away", status, err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit: %v; logs:\n%s", waitErr, logs.String())
		}
	case <-ctx.Done():
		t.Fatalf("still running 20 s after SIGTERM; logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") || strings.Contains(logs.String(), tok.Token) {
		t.Fatalf("logs lack the shutdown line or hold the token:\n%s", logs.String())
	}
}

func decodeJSON(res *http.Response, v any) error {
	defer res.Body.Close()
	return json.NewDecoder(res.Body).Decode(v)
}
