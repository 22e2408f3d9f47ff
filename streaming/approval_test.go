package streaming_test

import (
	"errors"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// A call is waiting from the append of its chunk; the first answer wins,
// whoever gives it, and reaches the worker on the control channel.
func TestLog_Approval(t *testing.T) {
	l := newLog(t)
	ctx := ctxT(t)
	const id = "approve"
	m := created(t, l, id)
	sub := subscribe(t, l.client, l.keys.ControlChannel(id))

	if err := l.Answer(ctx, id, "c1", streaming.AnswerApproved); !errors.Is(err, streaming.ErrNotWaiting) {
		t.Fatalf("answer before the call = %v, want ErrNotWaiting", err)
	}
	since := time.UnixMilli(time.Now().UnixMilli())
	call := chatstream.Part{Type: chatstream.PartToolCall, CallID: "c1", Name: "save_note", Arguments: "{}", RequiresApproval: true}
	callFrame := protocol.AppendPartChunk(nil, id, 0, call, since.UnixMicro())
	if _, err := l.AppendPart(ctx, id, m.Epoch, 0, callFrame, call, since); err != nil {
		t.Fatal(err)
	}
	// A retried append changes nothing, the time the wait started included.
	if _, err := l.AppendPart(ctx, id, m.Epoch, 0, callFrame, call, since.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	a, err := l.Approval(ctx, id, "c1")
	if err != nil || !a.Waiting || !a.Since.Equal(since) || a.Answer != "" {
		t.Fatalf("approval = %+v, %v; want waiting since %s", a, err, since)
	}
	if a, err := l.Approval(ctx, id, "other"); err != nil || a.Waiting {
		t.Fatalf("approval of another call = %+v, %v", a, err)
	}
	if err := l.Answer(ctx, id, "c1", streaming.AnswerDenied); err != nil {
		t.Fatal(err)
	}
	if got := sub.wait(t, 1); got[0] != streaming.ApprovalMessage("c1") {
		t.Fatalf("control channel got %q", got)
	}
	if call, ok := streaming.ApprovalOf([]byte(streaming.ApprovalMessage("c1"))); !ok || call != "c1" {
		t.Fatalf("ApprovalOf = %q, %v", call, ok)
	}
	if _, ok := streaming.ApprovalOf([]byte("cancel")); ok {
		t.Fatal("a cancel is not an approval")
	}
	for _, answer := range []string{streaming.AnswerApproved, streaming.AnswerExpired} {
		if err := l.Answer(ctx, id, "c1", answer); !errors.Is(err, streaming.ErrAnswered) {
			t.Fatalf("second answer %s = %v, want ErrAnswered", answer, err)
		}
	}
	if a, _ := l.Approval(ctx, id, "c1"); a.Answer != streaming.AnswerDenied {
		t.Fatalf("approval = %+v, want the first answer", a)
	}
	if err := l.Finish(ctx, id, m.Epoch, 1, streaming.End{Status: chatstream.StatusComplete}); err != nil {
		t.Fatal(err)
	}
	if err := l.Answer(ctx, id, "c1", streaming.AnswerApproved); !errors.Is(err, streaming.ErrEnded) {
		t.Fatalf("answer after the end = %v, want ErrEnded", err)
	}
	if err := l.Answer(ctx, "missing", "c1", streaming.AnswerApproved); !errors.Is(err, streaming.ErrGone) {
		t.Fatalf("answer of a missing stream = %v, want ErrGone", err)
	}
}

// The usage of the model calls so far is kept for a worker that takes over.
func TestLog_SaveUsage(t *testing.T) {
	l := newLog(t)
	ctx := ctxT(t)
	const id = "usage"
	m := created(t, l, id)
	u := chatstream.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}
	if err := l.SaveUsage(ctx, id, m.Epoch, u); err != nil {
		t.Fatal(err)
	}
	if meta, _ := l.Meta(ctx, id); meta.Usage == nil || *meta.Usage != u {
		t.Fatalf("meta usage = %+v", meta.Usage)
	}
	if err := l.SaveUsage(ctx, id, m.Epoch+1, u); !errors.Is(err, streaming.ErrFenced) {
		t.Fatalf("save with an old epoch = %v, want ErrFenced", err)
	}
}
