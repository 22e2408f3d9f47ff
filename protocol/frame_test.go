package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

func TestAppendChunk(t *testing.T) {
	cases := []string{"", "hello", ` "quoted" \ back`, "line\nbreak\ttab\r", "\x00\x1f ctl", "ünïcødé 🙂", "bad \xff utf8", "\u2028sep\u2029", `"index":7,`, `"ts":5}`}
	for _, content := range cases {
		b := protocol.AppendChunk(nil, "s-1", 42, content, 1700000000000000)
		var got struct {
			Type     string `json:"type"`
			StreamID string `json:"stream_id"`
			Index    int64  `json:"index"`
			Content  string `json:"content"`
			TS       int64  `json:"ts"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: frame %s is not JSON: %v", content, b, err)
		}
		want := strings.ToValidUTF8(content, "\uFFFD")
		if got.Type != "chunk" || got.StreamID != "s-1" || got.Index != 42 || got.Content != want || got.TS != 1700000000000000 {
			t.Fatalf("%q: decoded %+v", content, got)
		}
		typ, idx, ok := protocol.Scan(b)
		if !ok || typ != "chunk" || idx != 42 {
			t.Fatalf("%q: ScanFrame = %q %d %v", content, typ, idx, ok)
		}
		if ts, ok := protocol.ChunkTS(b); !ok || ts != 1700000000000000 {
			t.Fatalf("%q: ChunkTS = %d %v", content, ts, ok)
		}
		if id := protocol.StreamID(b); string(id) != "s-1" {
			t.Fatalf("%q: FrameStreamID = %q", content, id)
		}
	}
}

func TestScan_Snapshot(t *testing.T) {
	b := []byte(`{"type":"snapshot","stream_id":"s","content":"\"last_index\":9","last_index":4}`)
	typ, idx, ok := protocol.Scan(b)
	if !ok || typ != "snapshot" || idx != 4 {
		t.Fatalf("ScanFrame(%s) = %q %d %v", b, typ, idx, ok)
	}
}

func TestScan_Done(t *testing.T) {
	b := protocol.DoneFrame("s", chatstream.StatusFailed, -1, &chatstream.Failure{Code: "x", Message: `"index":3`})
	typ, idx, ok := protocol.Scan(b)
	if !ok || typ != "done" || idx != -1 {
		t.Fatalf("ScanFrame(%s) = %q %d %v", b, typ, idx, ok)
	}
	if _, _, ok := protocol.Scan([]byte(`{"nothing":1}`)); ok {
		t.Fatal("ScanFrame accepted a frame without type")
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a", "\"", "\\", "\x00", "\xff", "🙂", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := protocol.AppendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %s: %v", s, b, err)
		}
		want := s
		if !utf8.ValidString(s) {
			want = strings.ToValidUTF8(s, "\uFFFD")
		}
		// encoding/json replaces each invalid byte; ToValidUTF8 a run of them.
		if got != want && strings.ReplaceAll(got, "\uFFFD", "") != strings.ReplaceAll(want, "\uFFFD", "") {
			t.Fatalf("%q round-trips to %q", s, got)
		}
	})
}
