package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/streaming"
)

func TestOwners_EvictsOldest(t *testing.T) {
	o := newOwners(3)
	for i := range 4 {
		o.put(fmt.Sprint(i), fmt.Sprint("u", i))
	}
	if _, ok := o.get("0"); ok {
		t.Fatal("the oldest entry stayed past the size")
	}
	for i := 1; i < 4; i++ {
		if u, ok := o.get(fmt.Sprint(i)); !ok || u != fmt.Sprint("u", i) {
			t.Fatalf("entry %d = %q, %v", i, u, ok)
		}
	}
	o.put("3", "someone else") // an owner never changes: the first answer stays
	if u, _ := o.get("3"); u != "u3" {
		t.Fatalf("entry 3 rewritten to %q", u)
	}
}

// noStore fails every call: Authorize must not need Postgres.
type noStore struct{ Store }

func (noStore) FindMessage(context.Context, string, string) (*chatstream.Message, error) {
	return nil, errors.New("postgres unreachable")
}

// Once a stream's owner is known, Authorize answers without Redis or
// Postgres: a resume storm costs one read per stream, not one per socket.
func TestGenerations_AuthorizeRemembersOwners(t *testing.T) {
	ctx := context.Background()
	redis := testenv.StartRedisServer(t)
	client, err := streaming.NewClient(redis.URL(), streaming.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	keys := streaming.Keys{}
	log := streaming.NewChunkLog(client, keys, time.Minute)
	svc := NewGenerations(noStore{}, log, streaming.NewQueue(client, keys, "n", streaming.QueueConfig{}),
		streaming.NewEvents(client, keys, nil), nil, nil, nil)
	for _, id := range []string{"s1", "s2"} {
		if err := log.Create(ctx, id, "alice", "c"); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Authorize(ctx, "alice", "s1"); err != nil {
		t.Fatalf("owner: %v", err)
	}
	if err := svc.Authorize(ctx, "bob", "s1"); chatstream.ErrorCode(err) != chatstream.ENOTFOUND {
		t.Fatalf("another user: %v, want not_found", err)
	}
	redis.Kill()
	if err := svc.Authorize(ctx, "alice", "s1"); err != nil {
		t.Fatalf("owner, Redis down: %v (the owner was known)", err)
	}
	if err := svc.Authorize(ctx, "bob", "s1"); chatstream.ErrorCode(err) != chatstream.ENOTFOUND {
		t.Fatalf("another user, Redis down: %v, want not_found", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := svc.Authorize(tctx, "alice", "s2"); err == nil {
		t.Fatal("a stream never read was authorised with Redis down")
	}
}
