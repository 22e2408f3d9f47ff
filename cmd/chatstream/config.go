package main

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/tools"
	"github.com/chatstream/chatstream/worker"
)

// configError names the variable that is wrong and why, in one line.
type configError struct{ name, problem string }

func (e *configError) Error() string { return e.name + ": " + e.problem }

// env reads configuration variables; lookup is os.LookupEnv outside tests.
type env struct {
	lookup func(string) (string, bool)
}

func (e env) str(name, def string) string {
	if v, ok := e.lookup(name); ok && v != "" {
		return v
	}
	return def
}

func (e env) boolean(name string, def bool) (bool, error) {
	v := e.str(name, "")
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &configError{name, fmt.Sprintf("%q is not true or false", v)}
	}
	return b, nil
}

func (e env) integer(name string, def, min, max int) (int, error) {
	v := e.str(name, "")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, &configError{name, fmt.Sprintf("%q is not a whole number from %d to %d", v, min, max)}
	}
	return n, nil
}

func (e env) duration(name string, def, min time.Duration) (time.Duration, error) {
	v := e.str(name, "")
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, &configError{name, fmt.Sprintf("%q is not a Go duration such as 30s or 1h", v)}
	}
	if d < min {
		return 0, &configError{name, fmt.Sprintf("%s is shorter than the minimum %s", d, min)}
	}
	return d, nil
}

func (e env) url(name, def string, schemes ...string) (string, error) {
	v := e.str(name, def)
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return "", &configError{name, fmt.Sprintf("%q is not a URL with a host", redactURL(v))}
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return v, nil
		}
	}
	return "", &configError{name, fmt.Sprintf("scheme %q is not one of %s", u.Scheme, strings.Join(schemes, ", "))}
}

// redactURL hides a password in a URL before it is printed.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// loadConfig reads the node's configuration from the environment. The first
// problem found is returned as a *configError.
func loadConfig(e env) (app.Config, error) {
	var c app.Config
	var err error
	c.HTTPAddr = e.str("HTTP_ADDR", app.DefaultHTTPAddr)
	if c.RedisURL, err = e.url("REDIS_URL", app.DefaultRedisURL, "redis", "rediss", "unix"); err != nil {
		return c, err
	}
	if c.DatabaseURL, err = e.url("DATABASE_URL", app.DefaultDatabaseURL, "postgres", "postgresql"); err != nil {
		return c, err
	}
	maxConns, err := e.integer("DATABASE_MAX_CONNS", 0, 0, 10000)
	if err != nil {
		return c, err
	}
	c.DatabaseMaxConns = int32(maxConns)
	if c.RedisFlushDelay, err = e.duration("REDIS_FLUSH_DELAY", 0, 0); err != nil {
		return c, err
	}
	if c.AuthDev, err = e.boolean("AUTH_DEV", false); err != nil {
		return c, err
	}
	c.AuthSecret = []byte(e.str("AUTH_SECRET", ""))
	if len(c.AuthSecret) == 0 && !c.AuthDev {
		return c, &configError{"AUTH_SECRET", "required (an HS256 key of at least 32 bytes) unless AUTH_DEV=true"}
	}
	if len(c.AuthSecret) > 0 && len(c.AuthSecret) < 32 {
		return c, &configError{"AUTH_SECRET", fmt.Sprintf("%d bytes is too short for HS256; use at least 32", len(c.AuthSecret))}
	}
	if c.StreamTTL, err = e.duration("STREAM_TTL", app.DefaultStreamTTL, time.Second); err != nil {
		return c, err
	}
	if c.ChunksCompactAfter, err = e.duration("CHUNKS_COMPACT_AFTER", app.DefaultChunksCompactAfter, 0); err != nil {
		return c, err
	} else if c.ChunksCompactAfter == 0 {
		c.ChunksCompactAfter = -1 // 0 turns compaction off
	}
	if c.MaxContentBytes, err = e.integer("MAX_CONTENT_BYTES", server.DefaultMaxContentBytes, 1, server.MaxContentLimit); err != nil {
		return c, err
	}
	if c.ShutdownGrace, err = e.duration("SHUTDOWN_GRACE", app.DefaultShutdownGrace, 0); err != nil {
		return c, err
	}
	if c.Workers, err = e.integer("WORKERS", worker.DefaultWorkers, 0, 100000); err != nil {
		return c, err
	}
	api, work, err := roles(e.str("ROLES", "api,worker"))
	if err != nil {
		return c, err
	}
	switch {
	case !work:
		c.Workers = 0 // an API-only node, as WORKERS=0 makes one
	case !api && c.Workers == 0:
		return c, &configError{"WORKERS", "must be at least 1 when ROLES=worker (the node would do nothing)"}
	}
	c.WorkerOnly = !api
	c.NodeID = e.str("NODE_ID", "")
	c.KeyPrefix = e.str("REDIS_KEY_PREFIX", "")
	if v := e.str("WS_ORIGINS", ""); v != "" {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o == "*" {
				return c, &configError{"WS_ORIGINS", `"*" would let any site open sockets with a user's token; list the hosts`}
			} else if o != "" {
				c.WS.OriginPatterns = append(c.WS.OriginPatterns, o)
			}
		}
	}
	if c.WS.WriteCoalesce, err = e.duration("WS_WRITE_COALESCE", 0, 0); err != nil {
		return c, err
	} else if c.WS.WriteCoalesce > time.Second {
		return c, &configError{"WS_WRITE_COALESCE", "at most 1s: a socket holds its frames this long"}
	}
	c.OpenAIAPIKey = e.str("OPENAI_API_KEY", "")
	if c.OpenAIBaseURL, err = e.url("OPENAI_BASE_URL", llm.DefaultOpenAIBaseURL, "http", "https"); err != nil {
		return c, err
	}
	c.OpenAIModel = e.str("OPENAI_MODEL", app.DefaultOpenAIModel)
	if c.DemoTokensPerSec, err = e.float("DEMO_TOKENS_PER_SEC", llm.DefaultDemoRate, 0, 1e6); err != nil {
		return c, err
	}
	if c.HeartbeatTTL, err = e.duration("HEARTBEAT_TTL", streaming.DefaultHeartbeatTTL, time.Second); err != nil {
		return c, err
	}
	w := &c.Worker
	w.SystemPrompt = e.str("SYSTEM_PROMPT", worker.DefaultSystemPrompt)
	if w.HistoryBytes, err = e.integer("HISTORY_BUDGET_BYTES", worker.DefaultHistoryBytes, 1, 1<<30); err != nil {
		return c, err
	}
	if w.MaxTokens, err = e.integer("MAX_TOKENS", 0, 0, 1<<20); err != nil {
		return c, err
	}
	if w.StallTimeout, err = e.duration("LLM_STALL_TIMEOUT", worker.DefaultStallTimeout, 100*time.Millisecond); err != nil {
		return c, err
	}
	if w.FlushInterval, err = e.duration("CHUNK_FLUSH_INTERVAL", 0, 0); err != nil {
		return c, err
	}
	if w.MaxAnswerBytes, err = e.integer("MAX_ANSWER_BYTES", worker.DefaultMaxAnswerBytes, 1, 1<<30); err != nil {
		return c, err
	}
	if path := e.str("TOOLS_FILE", ""); path != "" {
		if w.Tools, err = tools.Load(path, nil); err != nil {
			return c, &configError{"TOOLS_FILE", fmt.Sprintf("%s: %v", path, err)}
		}
	}
	if w.MaxToolRounds, err = e.integer("MAX_TOOL_ROUNDS", worker.DefaultMaxToolRounds, 1, 100); err != nil {
		return c, err
	}
	if w.ApprovalTimeout, err = e.duration("TOOL_APPROVAL_TIMEOUT", worker.DefaultApprovalTimeout, time.Second); err != nil {
		return c, err
	}
	if err := loadLimits(e, &c); err != nil {
		return c, err
	}
	return c, nil
}

// loadLimits reads the per-user limits and the HTTP server's guards.
func loadLimits(e env, c *app.Config) error {
	// A limit of 0 turns it off; limits.Config says that with -1.
	limit := func(name string, def int, dst *int) error {
		n, err := e.integer(name, def, 0, 1<<30)
		if err != nil {
			return err
		}
		if *dst = n; n == 0 {
			*dst = -1
		}
		return nil
	}
	l := &c.Limits
	for _, v := range []struct {
		name string
		def  int
		dst  *int
	}{
		{"MAX_ACTIVE_GENERATIONS_PER_USER", limits.DefaultMaxActiveGenerations, &l.MaxActiveGenerations},
		{"SEND_RATE_PER_USER", limits.DefaultSendRate, &l.SendRate},
		{"MAX_SOCKETS_PER_USER", limits.DefaultMaxSockets, &l.MaxSockets},
		{"DEV_TOKEN_RATE", limits.DefaultDevTokenRate, &l.DevTokenRate},
		{"CONVERSATION_RATE_PER_USER", limits.DefaultConversationRate, &l.ConversationRate},
		{"MAX_CONNS_PER_ADDR", server.DefaultMaxConnsPerAddr, &c.MaxConnsPerAddr},
	} {
		if err := limit(v.name, v.def, v.dst); err != nil {
			return err
		}
	}
	var err error
	if c.BodyTimeout, err = e.duration("BODY_TIMEOUT", server.DefaultBodyTimeout, 100*time.Millisecond); err != nil {
		return err
	}
	c.AllowedHosts = e.list("ALLOWED_HOSTS")
	for _, h := range c.AllowedHosts {
		if h == "*" {
			return &configError{"ALLOWED_HOSTS", `"*" would serve any Host, which is the default without AUTH_DEV; list the hosts`}
		}
	}
	c.TrustedProxies = e.list("TRUSTED_PROXIES")
	for _, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err := netip.ParseAddr(p); err != nil {
				return &configError{"TRUSTED_PROXIES", fmt.Sprintf("%q is not an address or a CIDR prefix", p)}
			}
		}
	}
	return nil
}

// list reads a comma-separated list; empty items are left out.
func (e env) list(name string) []string {
	var out []string
	for _, v := range strings.Split(e.str(name, ""), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (e env) float(name string, def, min, max float64) (float64, error) {
	v := e.str(name, "")
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < min || f > max {
		return 0, &configError{name, fmt.Sprintf("%q is not a number from %g to %g", v, min, max)}
	}
	return f, nil
}

func osEnv() env { return env{lookup: os.LookupEnv} }

// roles parses ROLES: a comma-separated list of api and worker.
func roles(v string) (api, worker bool, err error) {
	for _, r := range strings.Split(v, ",") {
		switch strings.TrimSpace(r) {
		case "api":
			api = true
		case "worker":
			worker = true
		default:
			return false, false, &configError{"ROLES", fmt.Sprintf("unknown role %q; the roles are api and worker (e.g. ROLES=api,worker)", strings.TrimSpace(r))}
		}
	}
	return api, worker, nil
}
