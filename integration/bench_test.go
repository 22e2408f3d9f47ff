package integration

import (
	"testing"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
)

// BenchmarkCancelAcrossNodes measures a cancel sent to an API-only node
// until the done frame of the generation running on a worker node reaches
// the client (the worker stopped, Postgres written, done published).
// ns/op is that latency.
func BenchmarkCancelAcrossNodes(b *testing.B) {
	db := testenv.NewDatabase(b)
	prefix := testenv.Namespace(b)
	secret := []byte("measure-secret-measure-secret-measure")
	// One user sends and cancels in a loop: faster than the limits allow.
	api := demoNode(b, app.Config{Workers: 0, DatabaseURL: db, KeyPrefix: prefix, AuthSecret: secret, Limits: limits.Off()})
	demoNode(b, app.Config{Workers: 4, DatabaseURL: db, KeyPrefix: prefix, AuthSecret: secret, Limits: limits.Off(),
		Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: 20})})
	tok := api.devToken(b, "alice")
	for b.Loop() {
		b.StopTimer()
		conv := api.conversation(b, tok)
		c := api.dial(b, tok)
		c.write(map[string]any{"type": "send", "conversation_id": conv, "content": "/demo tokens=1000\nlong"})
		acc, _ := c.readUntil("accepted")
		c.readUntil("chunk")
		b.StartTimer()
		if code := api.call(b, "POST", "/v1/streams/"+acc.StreamID+"/cancel", tok, nil, nil); code != 202 {
			b.Fatalf("cancel = %d", code)
		}
		for {
			f := c.read()
			if f.Type == "done" && f.StreamID == acc.StreamID {
				break
			}
		}
		b.StopTimer()
		c.conn.CloseNow()
		b.StartTimer()
	}
}
