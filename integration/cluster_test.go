package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
)

// The topology of `make run-cluster`, started by the same script
// (scripts/cluster.sh): a Redis Cluster of 3 masters + 3 replicas, two
// API-only nodes, two worker nodes and the proxy. Followers connect through
// the proxy — landing on both API nodes — and follow four answers; one API
// node and one worker node are killed (SIGKILL) mid-answer. Every follower
// reconnects through the proxy and resumes: each sees every chunk of every
// answer exactly once, in order, and each answer's stored text is its
// chunks (complete, or failed worker_lost for those the killed worker ran).
func TestCluster_ScriptTopologySurvivesKilledNodes(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "chatstream")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/chatstream").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	base := freePortBase(t)
	dir := t.TempDir()
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", base)
	script := func(arg string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts/cluster.sh"), arg)
		cmd.Env = append(os.Environ(), "CLUSTER_DIR="+dir, "CLUSTER_PORT_BASE="+strconv.Itoa(base), "PROXY_ADDR="+proxyAddr,
			"CHATSTREAM_BIN="+bin, "DATABASE_URL="+testenv.NewDatabase(t), "LOG_LEVEL=warn")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh %s: %v\n%s", arg, err, out)
		}
		return string(out)
	}
	began := time.Now()
	script("up")
	t.Cleanup(func() { script("down") })
	t.Logf("cluster up in %v", time.Since(began).Round(100*time.Millisecond))
	pids := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(script("pids")), "\n") {
		name, pid, _ := strings.Cut(line, " ")
		pids[name], _ = strconv.Atoi(pid)
	}
	for _, name := range []string{"api1", "api2", "worker1", "worker2", "proxy", fmt.Sprintf("redis-%d", base+6)} {
		if pids[name] == 0 {
			t.Fatalf("%s is not running: %v", name, pids)
		}
	}

	lb := &node{url: "http://" + proxyAddr}
	api := []*node{{url: fmt.Sprintf("http://127.0.0.1:%d", base+81)}, {url: fmt.Sprintf("http://127.0.0.1:%d", base+82)}}
	// A worker node answers health and metrics, not the API.
	if code, _ := (&node{url: fmt.Sprintf("http://127.0.0.1:%d", base+91)}).raw(t, "GET", "/v1/conversations", "", nil); code != 404 {
		t.Fatalf("a worker node answered the API: %d", code)
	}
	alice := lb.devToken(t, "alice")

	// Eight followers through the proxy: round-robin puts four on each
	// API node.
	const followers, answers = 8, 4
	results := make([]*clusterFollower, followers)
	for i := range results {
		results[i] = newClusterFollower(t, lb, alice)
	}
	for i, n := range api {
		// The node counts a socket just after its handshake: wait for it.
		if !waitUntil(10*time.Second, func() bool { return n.metric(t, "chatstream_websockets_open") == followers/2 }) {
			t.Fatalf("API node %d holds %v of the %d sockets", i+1, n.metric(t, "chatstream_websockets_open"), followers)
		}
	}
	// And a browser through the balancer: its socket makes one API node
	// hold five; that node is the one killed.
	browser := newBrowser(t)
	signIn(t, browser, lb, "bob")
	pageAnswer := sendFromPage(t, browser, demoPrompt(300, 40, "from the page"))
	waitStatus(t, browser, pageAnswer, "streaming")
	apiVictim := ""
	if !waitUntil(10*time.Second, func() bool {
		for i, n := range api {
			if n.metric(t, "chatstream_websockets_open") == followers/2+1 {
				apiVictim = fmt.Sprintf("api%d", i+1)
				return true
			}
		}
		return false
	}) {
		t.Fatal("the page's socket is on no API node")
	}
	// Four answers of 300 chunks at 40/s, so that the kills land mid-answer
	// on both workers (each takes some).
	var ids []string
	convOf := map[string]string{}
	for i := range answers { // one conversation each: one answer streams at a time in a conversation
		conv := lb.conversation(t, alice)
		id := lb.send(t, alice, conv, demoPrompt(300, 40, fmt.Sprintf("answer %d", i))).StreamID
		ids = append(ids, id)
		convOf[id] = conv
	}
	var wg sync.WaitGroup
	for _, f := range results {
		wg.Add(1)
		go func() { defer wg.Done(); f.follow(ids) }()
	}
	// Mid-answer: every follower has some chunks of every answer.
	if !waitUntil(30*time.Second, func() bool {
		for _, f := range results {
			if !f.hasAll(ids, 40) {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the followers got no chunks")
	}
	// The worker killed is one that runs answers now (the queue decides
	// which takes what).
	victim := ""
	for i, name := range []string{"worker1", "worker2"} {
		w := &node{url: fmt.Sprintf("http://127.0.0.1:%d", base+91+i)}
		if w.metric(t, "chatstream_generations_active") > 0 {
			victim = name
			break
		}
	}
	if victim == "" {
		t.Fatal("no worker node runs an answer mid-answer")
	}
	for _, name := range []string{apiVictim, victim} {
		if err := syscall.Kill(pids[name], syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", name, err)
		}
	}
	wg.Wait()

	failed := 0
	for _, id := range ids {
		m := lb.final(t, alice, convOf[id], id)
		switch {
		case m.Status == chatstream.StatusComplete:
		case m.Status == chatstream.StatusFailed && m.Error != nil && m.Error.Code == "worker_lost":
			failed++
		default:
			t.Fatalf("answer %s ended %s (%+v)", id, m.Status, m.Error)
		}
		for i, f := range results {
			if err := f.err(); err != nil {
				t.Fatalf("follower %d: %v", i, err)
			}
			if got := f.text(id); got != m.Content {
				t.Fatalf("follower %d saw %q of answer %s; stored (%s) %q", i, got, id, m.Status, m.Content)
			}
		}
	}
	reconnected := 0
	for _, f := range results {
		reconnected += f.reconnects()
	}
	if reconnected < followers/2 {
		t.Fatalf("%d reconnects: the followers of the killed API node did not all come back", reconnected)
	}
	if failed == 0 {
		t.Fatalf("no answer ended worker_lost: the kill of %s hit no generation", victim)
	}
	// The page reconnected through the balancer and shows its answer as
	// stored (complete, or failed with the text it had if its worker died).
	bob := lb.devToken(t, "bob")
	stored := lb.final(t, bob, convID(t, browser), pageAnswer)
	waitStatus(t, browser, pageAnswer, string(stored.Status))
	showsStored(t, browser, stored)
	if state := eval[string](t, browser, `document.getElementById("conn").dataset.state`); state != "connected" {
		t.Fatalf("the page's socket is %s after its node died", state)
	}

	// What is left — one API node, one worker node — still answers.
	conv := lb.conversation(t, alice)
	after := lb.send(t, alice, conv, demoPrompt(20, 0, "after the kills"))
	if m := lb.final(t, alice, conv, after.StreamID); m.Status != chatstream.StatusComplete || m.Content == "" {
		t.Fatalf("an answer after the kills ended %s (%+v)", m.Status, m.Error)
	}
	t.Logf("%d answers, %d ended worker_lost with the killed %s; %d reconnects after killing %s; the page's answer ended %s",
		answers, failed, victim, reconnected, apiVictim, stored.Status)
}

// freePortBase picks B such that B and B+1…B+92 are free to listen on.
func freePortBase(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(400)*100
		free := true
		for _, off := range []int{0, 1, 2, 3, 4, 5, 6, 81, 82, 91, 92} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		// Redis Cluster's bus ports are the data ports + 10000.
		for off := 1; off <= 6 && free; off++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off+10000))
			if err != nil {
				free = false
			} else {
				ln.Close()
			}
		}
		if free {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// clusterFollower follows streams through the proxy, reconnecting (through
// the proxy again) and resuming from the last index it holds whenever its
// socket drops; it records every problem an exactly-once reader would see.
type clusterFollower struct {
	t     *testing.T
	lb    *node
	token string
	conn  *wsClient

	mu      sync.Mutex
	next    map[string]int64 // stream → the index it expects next
	texts   map[string]*strings.Builder
	done    map[string]bool
	drops   int
	problem error
}

func newClusterFollower(t *testing.T, lb *node, token string) *clusterFollower {
	f := &clusterFollower{t: t, lb: lb, token: token, next: map[string]int64{}, texts: map[string]*strings.Builder{}, done: map[string]bool{}}
	c, err := lb.connect(t, context.Background(), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.conn = c
	return f
}

// follow subscribes to ids and reads until every one is done; it may run
// for the time the kills and the recovery take.
func (f *clusterFollower) follow(ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	f.mu.Lock()
	for _, id := range ids {
		f.next[id] = 0
		f.texts[id] = &strings.Builder{}
	}
	f.mu.Unlock()
	subscribe := func() error {
		for _, id := range ids {
			f.mu.Lock()
			done, from := f.done[id], f.next[id]-1
			f.mu.Unlock()
			if done {
				continue
			}
			if err := f.conn.send(ctx, map[string]any{"type": "subscribe", "stream_id": id, "last_index": from}); err != nil {
				return err
			}
		}
		return nil
	}
	err := subscribe()
	for ctx.Err() == nil && !f.allDone(ids) {
		if err == nil {
			var fr frame
			if fr, err = f.conn.readFrame(ctx); err == nil {
				f.apply(fr)
				continue
			}
		}
		// The socket dropped (its node was killed): back through the proxy.
		f.mu.Lock()
		f.drops++
		f.mu.Unlock()
		f.conn.conn.CloseNow()
		time.Sleep(100 * time.Millisecond) // a reconnect backoff, as a client's
		var c *wsClient
		if c, err = f.lb.connect(f.t, ctx, f.token, nil); err == nil {
			f.conn = c
			err = subscribe()
		}
	}
	if !f.allDone(ids) {
		f.fail(fmt.Errorf("not every answer ended within 90 s: %v", ctx.Err()))
	}
	f.conn.conn.Close(websocket.StatusNormalClosure, "")
}

func (f *clusterFollower) apply(fr frame) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.next[fr.StreamID]; !ok {
		return
	}
	switch fr.Type {
	case "chunk":
		if fr.Index != f.next[fr.StreamID] {
			f.problem = fmt.Errorf("stream %s: chunk %d, want %d (lost or duplicated)", fr.StreamID, fr.Index, f.next[fr.StreamID])
			return
		}
		f.next[fr.StreamID]++
		f.texts[fr.StreamID].WriteString(fr.part().Text)
	case "done":
		if fr.LastIndex != f.next[fr.StreamID]-1 {
			f.problem = fmt.Errorf("stream %s: done at %d after chunk %d", fr.StreamID, fr.LastIndex, f.next[fr.StreamID]-1)
		}
		f.done[fr.StreamID] = true
	case "snapshot", "error":
		b, _ := json.Marshal(fr)
		f.problem = fmt.Errorf("stream %s: unexpected %s", fr.StreamID, b)
	}
}

func (f *clusterFollower) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.problem == nil {
		f.problem = err
	}
}

func (f *clusterFollower) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.problem
}

func (f *clusterFollower) allDone(ids []string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if !f.done[id] {
			return false
		}
	}
	return true
}

func (f *clusterFollower) hasAll(ids []string, n int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if f.next[id] < n {
			return false
		}
	}
	return true
}

func (f *clusterFollower) text(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.texts[id].String()
}

func (f *clusterFollower) reconnects() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drops
}

// compose.yaml's cluster profile has the shape scripts/cluster.sh starts,
// and both take the nodes' settings from deploy/cluster.env, whose every
// key is a setting the README documents.
func TestCluster_ComposeProfileMatchesTheScript(t *testing.T) {
	compose, err := os.ReadFile("../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := string(compose)
	for _, want := range []string{"redis-1:", "redis-2:", "redis-3:", "redis-4:", "redis-5:", "redis-6:",
		"--cluster-replicas 1", "env_file: deploy/cluster.env", `"proxy", "-listen"`, "-backend\", \"http://api1:8080", "-backend\", \"http://api2:8080"} {
		if !strings.Contains(c, want) {
			t.Errorf("compose.yaml's cluster profile lacks %q", want)
		}
	}
	if n := strings.Count(c, "ROLES: api\n"); n != 2 {
		t.Errorf("compose.yaml has %d API nodes, the script 2", n)
	}
	if n := strings.Count(c, "ROLES: worker\n"); n != 2 {
		t.Errorf("compose.yaml has %d worker nodes, the script 2", n)
	}
	script, err := os.ReadFile("../scripts/cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), `"$ROOT/deploy/cluster.env"`) || !strings.Contains(string(script), "--cluster-replicas 1") {
		t.Error("scripts/cluster.sh does not read deploy/cluster.env or make 3 masters + 3 replicas")
	}
	env, err := os.ReadFile("../deploy/cluster.env")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := 0
	for _, line := range strings.Split(string(env), "\n") {
		key, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		keys++
		if !strings.Contains(string(readme), "| `"+key+"` |") {
			t.Errorf("deploy/cluster.env sets %s, which the README's configuration table does not list", key)
		}
	}
	if keys == 0 {
		t.Fatal("deploy/cluster.env sets nothing")
	}
}
