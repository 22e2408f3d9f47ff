package worker_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/worker"
)

// A send whose job cannot be queued stores nothing: no message is left
// streaming without a job to end it.
func TestGenerations_SendWithRedisDown(t *testing.T) {
	e := newEnv(t)
	conv := e.conversation(t)
	client, err := streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	client.Close() // every command now fails
	log := streaming.NewChunkLog(client, e.keys, time.Minute)
	queue := streaming.NewQueue(client, e.keys, "down", streaming.QueueConfig{})
	svc := worker.NewGenerations(e.db, log, queue, streaming.NewEvents(client, e.keys, nil), nil, nil, nil)
	_, err = svc.Start(streamtest.Ctx(t), chatstream.Turn{Kind: chatstream.TurnSend, UserID: "alice", ConversationID: conv, Content: "hello"})
	if code := chatstream.ErrorCode(err); code != chatstream.EUNAVAILABLE {
		t.Fatalf("send with Redis down: %v (code %s), want unavailable", err, code)
	}
	_, p, err := e.db.BranchPage(streamtest.Ctx(t), "alice", conv, "", 50)
	if err != nil || len(p.Messages) != 0 {
		t.Fatalf("messages after a failed send: %v, %v; want none", p, err)
	}
}

// A job whose message transaction never committed ends: the worker waits
// CommitWait for the message, then ends the stream failed without asking
// the model.
func TestPool_JobWithoutMessageEnds(t *testing.T) {
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{CommitWait: 200 * time.Millisecond}})
	conv := e.conversation(t)
	id := uuid.NewString()
	ctx := streamtest.Ctx(t)
	if err := n.log.Create(ctx, id, "alice", conv); err != nil {
		t.Fatal(err)
	}
	if err := n.queue.Enqueue(ctx, chatstream.Job{StreamID: id, ConversationID: conv, UserID: "alice"}); err != nil {
		t.Fatal(err)
	}
	frames := e.frames.WaitDone(t, e.keys.Channel(id))
	var done protocol.Done
	if err := json.Unmarshal([]byte(frames[len(frames)-1]), &done); err != nil {
		t.Fatal(err)
	}
	if done.Status != chatstream.StatusFailed || done.Error == nil || done.Error.Code != chatstream.ENOTFOUND || done.LastIndex != -1 {
		t.Fatalf("done = %+v, want failed not_found with no chunk", done)
	}
	if n := len(e.llm.Requests()); n != 0 {
		t.Fatalf("the model was asked %d times for a message that does not exist", n)
	}
}
