package protocol_test

import (
	"testing"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

func BenchmarkAppendChunk(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = protocol.AppendChunk(buf[:0], "5f0c7b7e-4a53-4d6f-9d36-1b7f8a3e2c10", 1234, " streaming", 1795726409121522)
	}
}

func BenchmarkScan(b *testing.B) {
	frame := protocol.AppendChunk(nil, "5f0c7b7e-4a53-4d6f-9d36-1b7f8a3e2c10", 1234, " a \"quoted\" word", 1795726409121522)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := protocol.Scan(frame); !ok {
			b.Fatal("no frame")
		}
	}
}

// The frame of each kind of chunk, as the worker builds it: text takes the
// path of AppendChunk; the others marshal their part.
func BenchmarkAppendPartChunk(b *testing.B) {
	for _, c := range []struct {
		name string
		part chatstream.Part
	}{
		{"text", chatstream.Part{Type: chatstream.PartText, Text: " streaming"}},
		{"reasoning", chatstream.Part{Type: chatstream.PartReasoning, Text: " thinking"}},
		{"tool_call", chatstream.Part{Type: chatstream.PartToolCall, CallID: "call_8f3a", Name: "calculator", Arguments: `{"expression":"6 * 7"}`}},
	} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				buf = protocol.AppendPartChunk(buf[:0], "5f0c7b7e-4a53-4d6f-9d36-1b7f8a3e2c10", 1234, c.part, 1795726409121522)
			}
		})
	}
}
