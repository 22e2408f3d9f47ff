package protocol

import (
	"bytes"
	"testing"

	"github.com/chatstream/chatstream"
)

func TestEntry_RoundTrip(t *testing.T) {
	const id = "00000000-0000-4000-8000-000000000001"
	const t0 = int64(1796158039555543)
	for _, p := range []chatstream.Part{
		{Type: chatstream.PartText, Text: " word"},
		{Type: chatstream.PartText, Text: "a:b \"quoted\" \\ \n\t ünï 😀 \u2028"},
		{Type: chatstream.PartText, Text: ""},
		{Type: chatstream.PartReasoning, Text: "think: 1:2"},
		{Type: chatstream.PartToolCall, CallID: "call_1", Name: "calculator", Arguments: `{"expression":"6 * 7"}`, RequiresApproval: true},
		{Type: chatstream.PartToolApproval, CallID: "call_1", Approved: false, Reason: chatstream.ApprovalExpired},
		{Type: chatstream.PartToolResult, CallID: "call_1", Name: "calculator", Output: "42", IsError: true},
	} {
		for _, ts := range []int64{t0, t0 + 1_234_567, t0 - 5} { // a later writer's clock may be behind
			want := AppendPartChunk(nil, id, 7, p, ts)
			entry := AppendEntry(nil, p, ts, t0)
			got, err := FrameOfEntry(nil, id, 7, entry, t0)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%+v at %d: entry %q rebuilt %s (%v), want %s", p, ts, entry, got, err, want)
			}
			if p.Type == chatstream.PartText && len(entry) > len(p.Text)+12 {
				t.Fatalf("entry %q of %q is not compact", entry, p.Text)
			}
		}
	}
	// A whole frame (what logs held before entries) is read as it is.
	frame := AppendChunk(nil, id, 3, "old", 42)
	if got, err := FrameOfEntry(nil, id, 3, frame, t0); err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("a whole frame read as %s, %v", got, err)
	}
	for _, bad := range []string{"", "t", "t1", "x12:hi", "t12hi", "tab:hi", "c0:{not json", "a0:[]x", "o0:"} {
		if _, err := FrameOfEntry(nil, id, 0, []byte(bad), t0); err == nil {
			t.Errorf("entry %q was read", bad)
		}
	}
}

func FuzzEntry(f *testing.F) {
	f.Add("hello", int64(5), byte(0))
	f.Add("a:b\n", int64(-3), byte(1))
	f.Add(`{"x":1}`, int64(0), byte(2))
	f.Fuzz(func(t *testing.T, text string, dt int64, kind byte) {
		const id = "00000000-0000-4000-8000-000000000001"
		const t0 = int64(1796158039555543)
		if dt > 1<<40 || dt < -(1<<40) {
			return
		}
		p := chatstream.Part{Type: chatstream.PartText, Text: text}
		switch kind % 3 {
		case 1:
			p.Type = chatstream.PartReasoning
		case 2:
			p = chatstream.Part{Type: chatstream.PartToolResult, CallID: "c", Name: "n", Output: text}
		}
		want := AppendPartChunk(nil, id, 1, p, t0+dt)
		got, err := FrameOfEntry(nil, id, 1, AppendEntry(nil, p, t0+dt, t0), t0)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%+v: rebuilt %s (%v), want %s", p, got, err, want)
		}
	})
}
