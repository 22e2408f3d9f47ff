package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
)

// readOutsideConfig are the variables main reads itself, not loadConfig.
var readOutsideConfig = []string{"LOG_LEVEL", "PPROF_ADDR"}

// configValue is where each setting lands in the node's configuration, to
// compare the README's default with the code's.
var configValue = map[string]func(app.Config) any{
	"HTTP_ADDR":            func(c app.Config) any { return c.HTTPAddr },
	"REDIS_URL":            func(c app.Config) any { return c.RedisURL },
	"DATABASE_URL":         func(c app.Config) any { return c.DatabaseURL },
	"DATABASE_MAX_CONNS":   func(c app.Config) any { return int(c.DatabaseMaxConns) },
	"OPENAI_MODEL":         func(c app.Config) any { return c.OpenAIModel },
	"AUTH_DEV":             func(c app.Config) any { return c.AuthDev },
	"STREAM_TTL":           func(c app.Config) any { return c.StreamTTL },
	"CHUNKS_COMPACT_AFTER": func(c app.Config) any { return c.ChunksCompactAfter },
	"WORKERS":              func(c app.Config) any { return c.Workers },
	"WS_WRITE_COALESCE":    func(c app.Config) any { return c.WS.WriteCoalesce },
	"ROLES": func(c app.Config) any {
		switch {
		case c.WorkerOnly:
			return "worker"
		case c.Workers == 0:
			return "api"
		}
		return "api,worker"
	},
	"MAX_CONTENT_BYTES":               func(c app.Config) any { return c.MaxContentBytes },
	"MAX_ANSWER_BYTES":                func(c app.Config) any { return c.Worker.MaxAnswerBytes },
	"MAX_ACTIVE_GENERATIONS_PER_USER": func(c app.Config) any { return c.Limits.MaxActiveGenerations },
	"SEND_RATE_PER_USER":              func(c app.Config) any { return c.Limits.SendRate },
	"MAX_SOCKETS_PER_USER":            func(c app.Config) any { return c.Limits.MaxSockets },
	"CONVERSATION_RATE_PER_USER":      func(c app.Config) any { return c.Limits.ConversationRate },
	"DEV_TOKEN_RATE":                  func(c app.Config) any { return c.Limits.DevTokenRate },
	"MAX_CONNS_PER_ADDR":              func(c app.Config) any { return c.MaxConnsPerAddr },
	"BODY_TIMEOUT":                    func(c app.Config) any { return c.BodyTimeout },
	"SHUTDOWN_GRACE":                  func(c app.Config) any { return c.ShutdownGrace },
	"REDIS_FLUSH_DELAY":               func(c app.Config) any { return c.RedisFlushDelay },
	"HEARTBEAT_TTL":                   func(c app.Config) any { return c.HeartbeatTTL },
	"SYSTEM_PROMPT":                   func(c app.Config) any { return c.Worker.SystemPrompt },
	"HISTORY_BUDGET_BYTES":            func(c app.Config) any { return c.Worker.HistoryBytes },
	"MAX_TOKENS":                      func(c app.Config) any { return c.Worker.MaxTokens },
	"LLM_STALL_TIMEOUT":               func(c app.Config) any { return c.Worker.StallTimeout },
	"CHUNK_FLUSH_INTERVAL":            func(c app.Config) any { return c.Worker.FlushInterval },
	"DEMO_TOKENS_PER_SEC":             func(c app.Config) any { return c.DemoTokensPerSec },
	"MAX_TOOL_ROUNDS":                 func(c app.Config) any { return c.Worker.MaxToolRounds },
	"TOOL_APPROVAL_TIMEOUT":           func(c app.Config) any { return c.Worker.ApprovalTimeout },
}

// readmeSettings reads the README's configuration table: variable → default.
func readmeSettings(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	row := regexp.MustCompile("^\\| `([A-Z_0-9]+)` \\|.*\\| ([^|]+) \\|$")
	out := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			out[m[1]] = strings.TrimSpace(m[2])
		}
	}
	if len(out) < 20 {
		t.Fatalf("read only %d settings from the README's table", len(out))
	}
	return out
}

// The README's configuration table lists exactly the variables the binary
// reads, and each default it writes as a literal is the code's.
func TestREADME_ConfigurationTable(t *testing.T) {
	readme := readmeSettings(t)
	var read []string
	c, err := loadConfig(env{lookup: func(k string) (string, bool) {
		read = append(read, k)
		if k == "AUTH_SECRET" { // required: everything else takes its default
			return strings.Repeat("k", 32), true
		}
		return "", false
	}})
	if err != nil {
		t.Fatal(err)
	}
	read = append(read, readOutsideConfig...)
	for _, name := range read {
		if _, ok := readme[name]; !ok {
			t.Errorf("%s is read but not in the README's configuration table", name)
		}
	}
	literal := regexp.MustCompile("^`([^`]*)`(?: \\(.*\\))?$")
	for name, def := range readme {
		if !slices.Contains(read, name) {
			t.Errorf("the README lists %s, which the binary does not read", name)
			continue
		}
		m := literal.FindStringSubmatch(def)
		if m == nil {
			continue // prose: "required unless …", "host name + random suffix"
		}
		get, ok := configValue[name]
		if name == "LOG_LEVEL" {
			get, ok = func(app.Config) any { return defaultLogLevel }, true
		}
		if !ok {
			t.Errorf("%s: the README says its default is %s; say in configValue where it lands", name, def)
			continue
		}
		if err := sameDefault(get(c), m[1]); err != nil {
			t.Errorf("%s: the README's default %s, the code's %v: %v", name, def, get(c), err)
		}
	}
}

// sameDefault compares a configuration value with the README's text of it.
func sameDefault(v any, text string) error {
	switch v := v.(type) {
	case string:
		if v != text {
			return fmt.Errorf("%q != %q", v, text)
		}
	case int:
		n, err := strconv.Atoi(text)
		if err != nil || n != v {
			return fmt.Errorf("%d != %s", v, text)
		}
	case float64:
		f, err := strconv.ParseFloat(text, 64)
		if err != nil || f != v {
			return fmt.Errorf("%g != %s", v, text)
		}
	case bool:
		b, err := strconv.ParseBool(text)
		if err != nil || b != v {
			return fmt.Errorf("%v != %s", v, text)
		}
	case time.Duration:
		d, err := time.ParseDuration(text)
		if text == "0" {
			d, err = 0, nil
		}
		if err != nil || d != v {
			return fmt.Errorf("%s != %s", v, text)
		}
	default:
		return fmt.Errorf("cannot compare a %T", v)
	}
	return nil
}
