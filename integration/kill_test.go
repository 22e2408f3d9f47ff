package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/tools"
	"github.com/chatstream/chatstream/worker"
)

// nodeProcessEnv carries the spec of a node to run to a re-executed test
// binary (see TestPipeline_NodeProcess).
const nodeProcessEnv = "CHATSTREAM_TEST_NODE_PROCESS"

// processSpec is what a node process needs to join a test's cluster.
type processSpec struct {
	DatabaseURL string
	RedisURL    string
	KeyPrefix   string
	NodeID      string
	LLMURL      string
	AuthSecret  []byte
	Workers     int
	HTTPAddr    string        // empty: any free port
	Limits      limits.Config // the per-user limits
	ToolsFile   string        // TOOLS_FILE; empty: no tools
}

// TestMain runs the test binary as a node process when a kill test starts
// it with a node's spec in the environment; otherwise it runs the tests.
func TestMain(m *testing.M) {
	if raw := os.Getenv(nodeProcessEnv); raw != "" {
		if err := runNodeProcess(raw); err != nil {
			fmt.Fprintln(os.Stderr, "node process:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runNodeProcess serves like `chatstream serve` (app.Main.Run) until a
// signal comes or the process is killed.
func runNodeProcess(raw string) error {
	var spec processSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if spec.HTTPAddr == "" {
		spec.HTTPAddr = "127.0.0.1:0"
	}
	wcfg := worker.Config{SystemPrompt: systemPrompt}
	if spec.ToolsFile != "" {
		var err error
		if wcfg.Tools, err = tools.Load(spec.ToolsFile, nil); err != nil {
			return err
		}
	}
	return app.New(app.Config{
		HTTPAddr:     spec.HTTPAddr,
		Limits:       spec.Limits,
		RedisURL:     spec.RedisURL,
		DatabaseURL:  spec.DatabaseURL,
		AuthSecret:   spec.AuthSecret,
		KeyPrefix:    spec.KeyPrefix,
		NodeID:       spec.NodeID,
		Workers:      spec.Workers,
		HeartbeatTTL: time.Second,
		Provider:     llm.NewOpenAI(llm.OpenAIConfig{BaseURL: spec.LLMURL, APIKey: "test", Model: "m", IncludeUsage: true, RetryBase: time.Millisecond}),
		Worker:       wcfg,
	}).Run(ctx)
}

// nodeProcess is a worker node running in a process of its own.
type nodeProcess struct {
	cmd  *exec.Cmd
	out  *testenv.Buffer
	done chan struct{} // closed when the process has exited
}

// startProcess runs a worker node of the cluster as a child process and
// returns once its heartbeat is in Redis; mods change its spec.
func (c *cluster) startProcess(t *testing.T, nodeID string, mods ...func(*processSpec)) *nodeProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ps := processSpec{DatabaseURL: c.db, RedisURL: os.Getenv("REDIS_URL"), KeyPrefix: c.keys.Prefix,
		NodeID: nodeID, LLMURL: c.llm.URL(), AuthSecret: c.secret, Workers: 1}
	for _, mod := range mods {
		mod(&ps)
	}
	spec, _ := json.Marshal(ps)
	p := &nodeProcess{out: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(exe)
	p.cmd.Env = append(os.Environ(), nodeProcessEnv+"="+string(spec))
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// This goroutine lives until the process exits; the cleanup kills it.
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("output of node process %s:\n%s", nodeID, p.out.String())
		}
	})
	streamtest.Eventually(t, 30*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("node process %s exited:\n%s", nodeID, p.out.String())
		default:
		}
		n, err := c.redis.Do(streamtest.Ctx(t), c.redis.B().Exists().Key(c.keys.Heartbeat(nodeID)).Build()).AsInt64()
		return err == nil && n == 1
	}, "node process %s never started:\n%s", nodeID, p.out)
	return p
}

// kill kills the process with SIGKILL, as a crash would: no cleanup of any
// kind, and waits for it to be gone.
func (p *nodeProcess) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("node process %d did not die", p.cmd.Process.Pid)
	}
}

func TestPipeline_WorkerKilled(t *testing.T) {
	t.Parallel()
	t.Run("mid-answer ends failed with the partial text", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		api := c.node(t, 0)
		alice := api.devToken(t, "alice")
		conv := api.conversation(t, alice)
		c.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(1000), Interval: 20 * time.Millisecond})
		victim := c.startProcess(t, "victim")
		s := api.send(t, alice, conv, "q")
		streamtest.Eventually(t, 20*time.Second, func() bool { return c.llen(t, s.StreamID) >= 3 }, "the node process appended no chunks")
		c.node(t, 1) // the survivor
		victim.kill(t)

		m := api.final(t, alice, conv, s.StreamID)
		if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != "worker_lost" || m.Content == "" {
			t.Fatalf("message = %+v (error %+v)", m, m.Error)
		}
		c.checkStream(t, m) // content == joined chunks, done after them
		if got := len(c.llm.Requests()); got != 1 {
			t.Fatalf("%d model requests: a job with chunks was run again", got)
		}
	})
	t.Run("before the first token runs again", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		api := c.node(t, 0)
		alice := api.devToken(t, "alice")
		conv := api.conversation(t, alice)
		c.llm.Enqueue(llmtest.Script{BlockUntil: make(chan struct{})}, llmtest.Script{Tokens: streamtest.Tokens(3)})
		victim := c.startProcess(t, "victim")
		s := api.send(t, alice, conv, "q")
		if err := c.llm.WaitActive(streamtest.Ctx(t), 1); err != nil {
			t.Fatal(err)
		}
		c.node(t, 1) // the survivor
		victim.kill(t)

		m := api.final(t, alice, conv, s.StreamID)
		if m.Status != chatstream.StatusComplete || m.Content != " t0 t1 t2" {
			t.Fatalf("message = %+v (error %+v)", m, m.Error)
		}
		c.checkStream(t, m)
		reqs := c.llm.Requests()
		if len(reqs) != 2 || len(reqs[1].Messages) != 2 || reqs[1].Messages[1].Content != "q" {
			t.Fatalf("model requests = %+v, want the same prompt twice", reqs)
		}
	})
}

// A node killed while a tool call waits for approval: the node that takes
// the job over waits on, runs the call once the user approves (the tool
// server sees it once) and ends the answer complete, with no worker_lost.
func TestPipeline_KilledWhileApprovalWaits(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	te := newToolEndpoint(t)
	api := c.node(t, 0)
	alice := api.devToken(t, "alice")
	conv := api.conversation(t, alice)
	c.llm.Enqueue(llmtest.Script{Tokens: []string{"Saving."}, ToolCalls: []llm.ToolCall{saveCall}},
		llmtest.Script{Tokens: []string{"Saved", " it."}})
	victim := c.startProcess(t, "victim", func(ps *processSpec) { ps.ToolsFile = te.file })
	s := api.send(t, alice, conv, "save milk")
	tab := api.dial(t, alice)
	tab.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": -1})
	if f := tab.readChunk(s.StreamID, 1); f.Kind != "tool_call" {
		t.Fatalf("chunk 1 = %+v", f)
	}
	victim.kill(t)
	c.node(t, 1, withTools(te.set(t))) // the survivor
	// The survivor holds the job once its worker has claimed it (the
	// victim's claim, the reaper's, the worker's).
	streamtest.Eventually(t, 20*time.Second, func() bool {
		m, err := streaming.NewChunkLog(c.redis, c.keys, time.Hour).Meta(streamtest.Ctx(t), s.StreamID)
		return err == nil && m.Attempts >= 3
	}, "the survivor never took the job over")
	var e struct{ Error struct{ Code string } }
	if code := api.call(t, "POST", "/v1/streams/"+s.StreamID+"/approvals", alice, map[string]any{"call_id": saveCall.ID, "approved": true}, &e); code != 202 {
		t.Fatalf("approve = %d %+v", code, e)
	}
	r := tab.follow(s.StreamID, 2)
	if r.done.Status != "complete" {
		t.Fatalf("done = %+v", r.done)
	}
	m := api.final(t, alice, conv, s.StreamID)
	if m.Status != chatstream.StatusComplete || m.Content != "Saving.Saved it." || m.Error != nil {
		t.Fatalf("message = %+v (error %+v)", m, m.Error)
	}
	c.checkStream(t, m)
	if n := te.calls(); len(n) != 1 || n[saveCall.ID] != 1 {
		t.Fatalf("tool calls by key = %v, want %s once", n, saveCall.ID)
	}
	if reqs := c.llm.Requests(); len(reqs) != 2 || reqs[1].Messages[len(reqs[1].Messages)-1].Content != "saved milk" {
		t.Fatalf("model requests = %+v, want the first round and one with the result", reqs)
	}
}
