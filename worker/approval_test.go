package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/worker"
)

func save(id, q string) llm.ToolCall {
	return llm.ToolCall{ID: id, Name: "save", Arguments: `{"q":"` + q + `"}`}
}

// awaitCall waits until stream id published the chunk of tool call callID.
func (e *env) awaitCall(t *testing.T, id, callID string) {
	t.Helper()
	e.frames.WaitFor(t, e.keys.Channel(id), "tool_call chunk", func(m string) bool {
		return strings.Contains(m, `"kind":"tool_call"`) && strings.Contains(m, `"call_id":"`+callID+`"`)
	})
}

// A call of a requires_approval tool waits for the user's answer: approved
// it runs, denied it does not, unanswered it expires; the model goes on
// each time. Only the owner may answer, and only once.
func TestPool_Approval(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := newToolServer(t)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{Tools: ts.set, ApprovalTimeout: time.Minute}})
	ctx := streamtest.Ctx(t)
	ask := func(t *testing.T, c llm.ToolCall) string {
		t.Helper()
		e.llm.Enqueue(llmtest.Script{Tokens: []string{"Saving."}, ToolCalls: []llm.ToolCall{c}}, llmtest.Script{Tokens: []string{"Ok."}})
		id := n.send(t, e.conversation(t), "save it").ID
		e.awaitCall(t, id, c.ID)
		return id
	}

	t.Run("approved", func(t *testing.T) {
		before := len(ts.called())
		c := save("call_ok", "milk")
		id := ask(t, c)
		if err := n.svc.Approve(ctx, "bob", id, c.ID, true); chatstream.ErrorCode(err) != chatstream.ENOTFOUND {
			t.Fatalf("another user's approve = %v, want not_found", err)
		}
		if err := n.svc.Approve(ctx, "alice", id, "call_other", true); chatstream.ErrorCode(err) != chatstream.ECONFLICT {
			t.Fatalf("approve of a call that does not wait = %v, want conflict", err)
		}
		if len(ts.called()) != before {
			t.Fatal("the tool ran before it was approved")
		}
		if err := n.svc.Approve(ctx, "alice", id, c.ID, true); err != nil {
			t.Fatal(err)
		}
		if err := n.svc.Approve(ctx, "alice", id, c.ID, false); chatstream.ErrorCode(err) != chatstream.ECONFLICT {
			t.Fatalf("second answer = %v, want conflict", err)
		}
		m := e.final(t, id)
		wantParts(t, m, []chatstream.Part{textPart("Saving."), callPart(c, true), approvalPart(c.ID, true, "user"),
			resultPart(c.ID, "save", "save: milk", false), textPart("Ok.")})
		e.checkStream(t, m)
		if calls := ts.called(); len(calls) != before+1 || calls[before].Key != c.ID {
			t.Fatalf("tool calls = %+v", calls[before:])
		}
		if err := n.svc.Approve(ctx, "alice", id, c.ID, true); chatstream.ErrorCode(err) != chatstream.ECONFLICT {
			t.Fatalf("approve after the end = %v, want conflict", err)
		}
	})
	t.Run("denied", func(t *testing.T) {
		before := len(ts.called())
		c := save("call_no", "secrets")
		id := ask(t, c)
		if err := n.svc.Approve(ctx, "alice", id, c.ID, false); err != nil {
			t.Fatal(err)
		}
		m := e.final(t, id)
		wantParts(t, m, []chatstream.Part{textPart("Saving."), callPart(c, true), approvalPart(c.ID, false, "user"),
			resultPart(c.ID, "save", "The user denied this call; it was not made.", true), textPart("Ok.")})
		e.checkStream(t, m)
		if len(ts.called()) != before {
			t.Fatal("a denied call ran")
		}
		reqs := e.llm.Requests()
		if last := reqs[len(reqs)-1].Messages; last[len(last)-1].Role != "tool" || !strings.Contains(last[len(last)-1].Content, "denied") {
			t.Fatalf("the model was not told: %+v", last)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		c := save("call_cancel", "x")
		e.llm.Enqueue(llmtest.Script{ToolCalls: []llm.ToolCall{c}, NoTokens: true})
		id := n.send(t, e.conversation(t), "save it").ID
		e.awaitCall(t, id, c.ID)
		if err := n.svc.Cancel(ctx, "alice", id); err != nil {
			t.Fatal(err)
		}
		m := e.final(t, id)
		if m.Status != chatstream.StatusCancelled {
			t.Fatalf("message = %+v", m)
		}
		wantParts(t, m, []chatstream.Part{callPart(c, true)})
		e.checkStream(t, m)
	})
}

func TestPool_ApprovalExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := newToolServer(t)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{Tools: ts.set, ApprovalTimeout: 200 * time.Millisecond}})
	c := save("call_late", "x")
	e.llm.Enqueue(llmtest.Script{ToolCalls: []llm.ToolCall{c}, NoTokens: true}, llmtest.Script{Tokens: []string{"Never mind."}})
	id := n.send(t, e.conversation(t), "save it").ID
	m := e.final(t, id)
	wantParts(t, m, []chatstream.Part{callPart(c, true), approvalPart(c.ID, false, "expired"),
		resultPart(c.ID, "save", "Nobody approved this call in time; it was not made.", true), textPart("Never mind.")})
	e.checkStream(t, m)
	if len(ts.called()) != 0 {
		t.Fatal("an expired call ran")
	}
	if err := n.svc.Approve(streamtest.Ctx(t), "alice", id, c.ID, true); chatstream.ErrorCode(err) != chatstream.ECONFLICT {
		t.Fatalf("approve after expiry = %v, want conflict", err)
	}
}

// A generation is a function of its log at tool boundaries: the node that
// takes over the job of a dead one goes on from the log — it waits for the
// pending approval, makes a call that has no result (with the same
// Idempotency-Key), never one that has — and ends complete.
func TestPool_TakeoverAtToolBoundaries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := newToolServer(t)
	ctx := streamtest.Ctx(t)
	dead := e.startNode(t, nodeOpts{name: "dead", hbTTL: time.Second, cfg: worker.Config{Workers: 1}})
	dead.shutdown(t, time.Second)

	pending := save("call_pending", "p")
	running := lookup("call_running", "r")
	returned := lookup("call_returned", "d")
	waiting := e.plantDeadAnswer(t, dead, "a", []chatstream.Part{textPart("Saving."), callPart(pending, true)}, "")
	ran := e.plantDeadAnswer(t, dead, "b", []chatstream.Part{callPart(running, false)}, "")
	done := e.plantDeadAnswer(t, dead, "c", []chatstream.Part{callPart(returned, false), resultPart(returned.ID, "lookup", "lookup: d", false)}, "")
	midText := e.plantDeadAnswer(t, dead, "d", []chatstream.Part{callPart(returned, false), resultPart(returned.ID, "lookup", "x", false), textPart("half")}, "")
	approvedCall, deniedCall := save("call_approved", "y"), save("call_denied", "n")
	approved := e.plantDeadAnswer(t, dead, "e", []chatstream.Part{callPart(approvedCall, true), approvalPart(approvedCall.ID, true, "user")}, "")
	denied := e.plantDeadAnswer(t, dead, "f", []chatstream.Part{callPart(deniedCall, true), approvalPart(deniedCall.ID, false, "user")}, "")
	if err := dead.queue.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	e.llm.Default = llmtest.Script{Tokens: []string{"Finished."}}
	survivor := e.startNode(t, nodeOpts{name: "survivor", cfg: worker.Config{Tools: ts.set, ReapInterval: 100 * time.Millisecond}})

	t.Run("just returned: the model is asked, no call is made again", func(t *testing.T) {
		m := e.final(t, done)
		if m.Status != chatstream.StatusComplete {
			t.Fatalf("message = %+v (error %+v)", m, m.Error)
		}
		wantParts(t, m, []chatstream.Part{callPart(returned, false), resultPart(returned.ID, "lookup", "lookup: d", false), textPart("Finished.")})
		e.checkStream(t, m)
	})
	t.Run("running: made again with the same key", func(t *testing.T) {
		m := e.final(t, ran)
		wantParts(t, m, []chatstream.Part{callPart(running, false), resultPart(running.ID, "lookup", "lookup: r", false), textPart("Finished.")})
		e.checkStream(t, m)
	})
	t.Run("mid-text: worker_lost", func(t *testing.T) {
		m := e.final(t, midText)
		if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != "worker_lost" || m.Content != "half" {
			t.Fatalf("message = %+v (error %+v)", m, m.Error)
		}
	})
	t.Run("just approved: run without asking again", func(t *testing.T) {
		m := e.final(t, approved)
		wantParts(t, m, []chatstream.Part{callPart(approvedCall, true), approvalPart(approvedCall.ID, true, "user"),
			resultPart(approvedCall.ID, "save", "save: y", false), textPart("Finished.")})
		e.checkStream(t, m)
	})
	t.Run("just denied: not run", func(t *testing.T) {
		m := e.final(t, denied)
		wantParts(t, m, []chatstream.Part{callPart(deniedCall, true), approvalPart(deniedCall.ID, false, "user"),
			resultPart(deniedCall.ID, "save", "The user denied this call; it was not made.", true), textPart("Finished.")})
		e.checkStream(t, m)
	})
	t.Run("waiting for approval: the survivor waits and runs it once", func(t *testing.T) {
		// The survivor claims it, then waits; the approval is taken.
		streamtest.Eventually(t, 10*time.Second, func() bool {
			meta, err := survivor.log.Meta(ctx, waiting)
			return err == nil && meta.Attempts >= 3 // the dead node's claim, the reaper's and a worker's
		}, "the survivor never took the waiting job")
		if err := survivor.svc.Approve(ctx, "alice", waiting, pending.ID, true); err != nil {
			t.Fatal(err)
		}
		m := e.final(t, waiting)
		wantParts(t, m, []chatstream.Part{textPart("Saving."), callPart(pending, true), approvalPart(pending.ID, true, "user"),
			resultPart(pending.ID, "save", "save: p", false), textPart("Finished.")})
		e.checkStream(t, m)
	})
	keys := map[string]int{}
	for _, c := range ts.called() {
		keys[c.Key]++
	}
	if len(keys) != 3 || keys[running.ID] != 1 || keys[pending.ID] != 1 || keys[approvedCall.ID] != 1 {
		t.Fatalf("tool calls by key = %v, want %s, %s and %s once each", keys, running.ID, pending.ID, approvedCall.ID)
	}
}

// A node shutting down hands a job that waits for approval back to the
// queue (a wait may outlast any grace period); the next node goes on.
func TestPool_ShutdownHandsBackAWaitingCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := newToolServer(t)
	ctx := streamtest.Ctx(t)
	first := e.startNode(t, nodeOpts{cfg: worker.Config{Tools: ts.set}})
	c := save("call_handed", "h")
	e.llm.Enqueue(llmtest.Script{ToolCalls: []llm.ToolCall{c}, NoTokens: true}, llmtest.Script{Tokens: []string{"Saved."}})
	id := first.send(t, e.conversation(t), "save it").ID
	e.awaitCall(t, id, c.ID)
	first.shutdown(t, 100*time.Millisecond)
	// Answered while no worker holds it: the next finds the answer.
	if err := first.svc.Approve(ctx, "alice", id, c.ID, true); err != nil {
		t.Fatal(err)
	}
	e.startNode(t, nodeOpts{cfg: worker.Config{Tools: ts.set}})
	m := e.final(t, id)
	if m.Status != chatstream.StatusComplete {
		t.Fatalf("message = %+v (error %+v)", m, m.Error)
	}
	wantParts(t, m, []chatstream.Part{callPart(c, true), approvalPart(c.ID, true, "user"), resultPart(c.ID, "save", "save: h", false), textPart("Saved.")})
	e.checkStream(t, m)
	if len(ts.called()) != 1 {
		t.Fatalf("tool calls = %+v", ts.called())
	}
}
