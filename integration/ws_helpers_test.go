package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// frame is any server frame, decoded.
type frame struct {
	Type             string          `json:"type"`
	RequestID        json.RawMessage `json:"request_id"`
	StreamID         string          `json:"stream_id"`
	ConversationID   string          `json:"conversation_id"`
	Index            int64           `json:"index"`
	LastIndex        int64           `json:"last_index"`
	Content          string          `json:"content"`
	TS               int64           `json:"ts"`
	Status           string          `json:"status"`
	MessageID        string          `json:"message_id"`
	Code             string          `json:"code"`
	Message          json.RawMessage `json:"message"`
	Error            *struct{ Code, Message string }
	UserMessage      *apiMessage `json:"user_message"`
	AssistantMessage *apiMessage `json:"assistant_message"`
}

// wsClient is a test WebSocket client.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

// dial opens a socket to node n as the holder of token.
func (n *node) dial(t testing.TB, token string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.Replace(n.url, "http://", "ws://", 1) + "/v1/ws"
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: t, conn: conn}
}

// write sends one frame.
func (c *wsClient) write(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeRaw(b)
}

func (c *wsClient) writeRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame, failing the test after 30 s.
func (c *wsClient) read() frame {
	c.t.Helper()
	f, err := c.tryRead(30 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *wsClient) tryRead(timeout time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatalf("server frame %s is not JSON: %v", b, err)
	}
	return f, nil
}

// readUntil reads frames until one of type typ arrives and returns it with
// the frames before it.
func (c *wsClient) readUntil(typ string) (frame, []frame) {
	c.t.Helper()
	var before []frame
	for {
		f := c.read()
		if f.Type == typ {
			return f, before
		}
		before = append(before, f)
	}
}

// streamResult is what a follower received of one stream.
type streamResult struct {
	indexes  []int64
	text     strings.Builder
	snapshot bool
	done     frame
	// others are the frames of other streams, or of no stream (message
	// events, acknowledgements), read meanwhile: frames of different
	// channels may arrive in any order.
	others []frame
}

// follow reads the frames of stream id until its done frame, checking that
// chunk indexes start at from and have no hole and no duplicate.
func (c *wsClient) follow(id string, from int64) *streamResult {
	c.t.Helper()
	r := &streamResult{}
	next := from
	for {
		f := c.read()
		if f.StreamID != id {
			r.others = append(r.others, f)
			continue
		}
		switch f.Type {
		case "chunk":
			if f.Index != next {
				c.t.Fatalf("stream %s: got index %d, want %d", id, f.Index, next)
			}
			next++
			r.indexes = append(r.indexes, f.Index)
			r.text.WriteString(f.Content)
		case "snapshot":
			r.snapshot = true
			r.text.Reset()
			r.text.WriteString(f.Content)
			next = f.LastIndex + 1
		case "done":
			if f.LastIndex != next-1 {
				c.t.Fatalf("stream %s: done last_index %d after index %d", id, f.LastIndex, next-1)
			}
			r.done = f
			return r
		case "error":
			c.t.Fatalf("stream %s: error frame %s: %s", id, f.Code, f.Message)
		}
	}
}
