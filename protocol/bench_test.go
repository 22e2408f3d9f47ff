package protocol_test

import (
	"testing"

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
