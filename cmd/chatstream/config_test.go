package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mapEnv(m map[string]string) env {
	return env{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func TestLoadConfig_Defaults(t *testing.T) {
	c, err := loadConfig(mapEnv(map[string]string{"AUTH_DEV": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8080" || c.RedisURL != "redis://127.0.0.1:6379/0" ||
		c.DatabaseURL != "postgres://localhost:5432/chatstream?sslmode=disable" ||
		c.StreamTTL != time.Hour || c.MaxContentBytes != 32768 || !c.AuthDev || c.Workers != 64 ||
		c.OpenAIAPIKey != "" || c.DemoTokensPerSec != 30 || c.Worker.StallTimeout != time.Minute || c.Worker.FlushInterval != 0 || c.DatabaseMaxConns != 0 || c.RedisFlushDelay != 0 {
		t.Fatalf("defaults = %+v", c)
	}
	if l := c.Limits; l.MaxActiveGenerations != 4 || l.SendRate != 30 || l.MaxSockets != 32 || l.DevTokenRate != 10 ||
		l.ConversationRate != 60 || c.MaxConnsPerAddr != 512 || c.BodyTimeout != 10*time.Second || c.Worker.MaxAnswerBytes != 1<<20 {
		t.Fatalf("limits = %+v, conns per address %d, body timeout %s, answer cap %d", l, c.MaxConnsPerAddr, c.BodyTimeout, c.Worker.MaxAnswerBytes)
	}
	off, err := loadConfig(mapEnv(map[string]string{"AUTH_DEV": "true", "MAX_SOCKETS_PER_USER": "0", "MAX_CONNS_PER_ADDR": "0",
		"ALLOWED_HOSTS": "chat.example.com, *.example.org", "TRUSTED_PROXIES": "10.0.0.0/8,192.168.1.7"}))
	if err != nil {
		t.Fatal(err)
	}
	if off.Limits.MaxSockets != -1 || off.MaxConnsPerAddr != -1 || len(off.AllowedHosts) != 2 || len(off.TrustedProxies) != 2 {
		t.Fatalf("0 turns a limit off, lists are read: %+v", off)
	}
}

func TestLoadConfig_Errors(t *testing.T) {
	secret := strings.Repeat("k", 32)
	cases := []struct {
		name string
		env  map[string]string
		want string // the variable the message must name
	}{
		{"NoSecret", map[string]string{}, "AUTH_SECRET"},
		{"ShortSecret", map[string]string{"AUTH_SECRET": "short"}, "AUTH_SECRET"},
		{"BadDev", map[string]string{"AUTH_DEV": "maybe"}, "AUTH_DEV"},
		{"BadTTL", map[string]string{"AUTH_SECRET": secret, "STREAM_TTL": "forever"}, "STREAM_TTL"},
		{"TinyTTL", map[string]string{"AUTH_SECRET": secret, "STREAM_TTL": "1ms"}, "STREAM_TTL"},
		{"BadMax", map[string]string{"AUTH_SECRET": secret, "MAX_CONTENT_BYTES": "-1"}, "MAX_CONTENT_BYTES"},
		{"BadRedis", map[string]string{"AUTH_SECRET": secret, "REDIS_URL": "http://x:1"}, "REDIS_URL"},
		{"BadDatabase", map[string]string{"AUTH_SECRET": secret, "DATABASE_URL": "::nope"}, "DATABASE_URL"},
		{"BadWorkers", map[string]string{"AUTH_SECRET": secret, "WORKERS": "many"}, "WORKERS"},
		{"BadMaxConns", map[string]string{"AUTH_SECRET": secret, "DATABASE_MAX_CONNS": "-3"}, "DATABASE_MAX_CONNS"},
		{"BadFlushDelay", map[string]string{"AUTH_SECRET": secret, "REDIS_FLUSH_DELAY": "-1ms"}, "REDIS_FLUSH_DELAY"},
		{"BadBaseURL", map[string]string{"AUTH_SECRET": secret, "OPENAI_BASE_URL": "localhost:11434"}, "OPENAI_BASE_URL"},
		{"BadRate", map[string]string{"AUTH_SECRET": secret, "DEMO_TOKENS_PER_SEC": "fast"}, "DEMO_TOKENS_PER_SEC"},
		{"BadStall", map[string]string{"AUTH_SECRET": secret, "LLM_STALL_TIMEOUT": "1ns"}, "LLM_STALL_TIMEOUT"},
		{"BadFlush", map[string]string{"AUTH_SECRET": secret, "CHUNK_FLUSH_INTERVAL": "soon"}, "CHUNK_FLUSH_INTERVAL"},
		{"AnyOrigin", map[string]string{"AUTH_SECRET": secret, "WS_ORIGINS": "chat.example.com, *"}, "WS_ORIGINS"},
		{"BadAnswerCap", map[string]string{"AUTH_SECRET": secret, "MAX_ANSWER_BYTES": "0"}, "MAX_ANSWER_BYTES"},
		{"BadActive", map[string]string{"AUTH_SECRET": secret, "MAX_ACTIVE_GENERATIONS_PER_USER": "-1"}, "MAX_ACTIVE_GENERATIONS_PER_USER"},
		{"BadSendRate", map[string]string{"AUTH_SECRET": secret, "SEND_RATE_PER_USER": "lots"}, "SEND_RATE_PER_USER"},
		{"BadSockets", map[string]string{"AUTH_SECRET": secret, "MAX_SOCKETS_PER_USER": "1.5"}, "MAX_SOCKETS_PER_USER"},
		{"BadDevTokenRate", map[string]string{"AUTH_SECRET": secret, "DEV_TOKEN_RATE": "x"}, "DEV_TOKEN_RATE"},
		{"BadConnsPerAddr", map[string]string{"AUTH_SECRET": secret, "MAX_CONNS_PER_ADDR": "-2"}, "MAX_CONNS_PER_ADDR"},
		{"BadBodyTimeout", map[string]string{"AUTH_SECRET": secret, "BODY_TIMEOUT": "1ns"}, "BODY_TIMEOUT"},
		{"AnyHost", map[string]string{"AUTH_SECRET": secret, "ALLOWED_HOSTS": "chat.example.com,*"}, "ALLOWED_HOSTS"},
		{"BadProxy", map[string]string{"AUTH_SECRET": secret, "TRUSTED_PROXIES": "10.0.0.0/8, lb"}, "TRUSTED_PROXIES"},
		{"BadToolRounds", map[string]string{"AUTH_SECRET": secret, "MAX_TOOL_ROUNDS": "0"}, "MAX_TOOL_ROUNDS"},
		{"BadApprovalTimeout", map[string]string{"AUTH_SECRET": secret, "TOOL_APPROVAL_TIMEOUT": "10ms"}, "TOOL_APPROVAL_TIMEOUT"},
		{"MessageTooLargeForAFrame", map[string]string{"AUTH_SECRET": secret, "MAX_CONTENT_BYTES": "200000"}, "MAX_CONTENT_BYTES"},
		{"LongCoalesce", map[string]string{"AUTH_SECRET": secret, "WS_WRITE_COALESCE": "2s"}, "WS_WRITE_COALESCE"},
		{"UnknownRole", map[string]string{"AUTH_SECRET": secret, "ROLES": "api,cache"}, "ROLES"},
		{"EmptyRole", map[string]string{"AUTH_SECRET": secret, "ROLES": "api,"}, "ROLES"},
		{"IdleWorkerNode", map[string]string{"AUTH_SECRET": secret, "ROLES": "worker", "WORKERS": "0"}, "WORKERS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(mapEnv(tc.env))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want+": ") {
				t.Fatalf("error = %v, want one naming %s", err, tc.want)
			}
		})
	}
}

// ROLES picks what a node does: both (the default), the API alone (no
// workers, as WORKERS=0), or the workers alone (no API).
func TestLoadConfig_Roles(t *testing.T) {
	for _, c := range []struct {
		env        map[string]string
		workers    int
		workerOnly bool
	}{
		{map[string]string{}, 64, false},
		{map[string]string{"ROLES": "api,worker", "WORKERS": "8"}, 8, false},
		{map[string]string{"ROLES": "worker, api"}, 64, false},
		{map[string]string{"ROLES": "api", "WORKERS": "8"}, 0, false},
		{map[string]string{"WORKERS": "0"}, 0, false},
		{map[string]string{"ROLES": "worker", "WORKERS": "3"}, 3, true},
	} {
		c.env["AUTH_DEV"] = "true"
		got, err := loadConfig(mapEnv(c.env))
		if err != nil || got.Workers != c.workers || got.WorkerOnly != c.workerOnly {
			t.Errorf("%v: workers %d, worker-only %v, %v; want %d, %v", c.env, got.Workers, got.WorkerOnly, err, c.workers, c.workerOnly)
		}
	}
}

// A bad TOOLS_FILE stops the process at start with one line (exit 2) that
// names the variable, the file and the problem.
func TestRun_BadToolsFileExits(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "none.json"), "no such file"},
		{"bad JSON", write("bad.json", "{\"tools\": [\n  {\"name\": \"a\",,}]}"), "invalid JSON at line 2"},
		{"duplicate", write("dup.json", `{"tools": [{"name": "a", "url": "http://h/"}, {"name": "a", "url": "http://h/"}]}`), `tool "a" is defined twice`},
		{"bad schema", write("schema.json", `{"tools": [{"name": "a", "url": "http://h/", "parameters": {"type": 12}}]}`), `tool "a": parameters:`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errw bytes.Buffer
			code := run([]string{"serve"}, mapEnv(map[string]string{"AUTH_DEV": "true", "TOOLS_FILE": c.path}), &out, &errw)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr %q", code, errw.String())
			}
			lines := strings.Split(strings.TrimSpace(errw.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "TOOLS_FILE: "+c.path) || !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr = %q, want one line naming TOOLS_FILE, %s and %q", errw.String(), c.path, c.want)
			}
		})
	}
	good := write("good.json", `{"tools": [{"name": "a", "url": "http://h/", "requires_approval": true}]}`)
	c, err := loadConfig(mapEnv(map[string]string{"AUTH_DEV": "true", "TOOLS_FILE": good, "MAX_TOOL_ROUNDS": "3", "TOOL_APPROVAL_TIMEOUT": "30s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Worker.Tools.Len() != 1 || !c.Worker.Tools.RequiresApproval("a") || c.Worker.MaxToolRounds != 3 || c.Worker.ApprovalTimeout != 30*time.Second {
		t.Fatalf("worker config = %+v", c.Worker)
	}
}

func TestLoadConfig_Origins(t *testing.T) {
	c, err := loadConfig(mapEnv(map[string]string{"AUTH_DEV": "true", "WS_ORIGINS": "chat.example.com, *.example.org"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.WS.OriginPatterns) != 2 || c.WS.OriginPatterns[0] != "chat.example.com" || c.WS.OriginPatterns[1] != "*.example.org" {
		t.Fatalf("origin patterns = %q", c.WS.OriginPatterns)
	}
}

func TestLoadConfig_RedactsPassword(t *testing.T) {
	_, err := loadConfig(mapEnv(map[string]string{"AUTH_DEV": "true", "DATABASE_URL": "mysql://u:hunter2@h/db"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error = %v; must fail without printing the password", err)
	}
}

func TestRun_BadConfigExits(t *testing.T) {
	var out, errw bytes.Buffer
	code := run([]string{"serve"}, mapEnv(map[string]string{"STREAM_TTL": "x", "AUTH_DEV": "true"}), &out, &errw)
	if code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSpace(errw.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "STREAM_TTL") {
		t.Fatalf("stderr = %q, want one line naming STREAM_TTL", errw.String())
	}
	if code := run([]string{"bogus"}, mapEnv(nil), &out, &errw); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
}

// The binary introduces itself: help lists every command, and each
// command's -h prints its usage to stdout and exits 0.
func TestRun_Help(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"help"}, mapEnv(nil), &out, &errOut); code != 0 {
		t.Fatalf("help exited %d", code)
	}
	for _, c := range commands {
		if !strings.Contains(out.String(), "  "+c.name+" ") {
			t.Errorf("help does not list %s:\n%s", c.name, out.String())
		}
	}
	for _, name := range []string{"serve", "migrate", "ask", "loadgen"} {
		out.Reset()
		if code := run([]string{name, "-h"}, mapEnv(nil), &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "usage: chatstream "+name) {
			t.Errorf("%s -h: exit %d, stdout %q", name, code, out.String())
		}
	}
	if code := run([]string{"serve", "-bogus"}, mapEnv(nil), &out, &errOut); code != 2 {
		t.Errorf("a bad flag exited %d, want 2", code)
	}
}
