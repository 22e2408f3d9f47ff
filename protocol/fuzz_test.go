package protocol

import (
	"encoding/json"
	"testing"
)

// FuzzScan: the byte scanners of frames (the hub's, the delivery's,
// the load generator's) never panic, and agree with a JSON decode on the
// frames chatstream builds.
func FuzzScan(f *testing.F) {
	f.Add([]byte(`{"type":"chunk","stream_id":"s","index":3,"content":"x","ts":5}`), "x", int64(3))
	f.Add([]byte(`{"type":"done","stream_id":"s","message_id":"s","status":"complete","last_index":-1}`), "", int64(0))
	f.Add([]byte(`{"type":"chunk","index":`), "\"index\":7", int64(-9))
	f.Fuzz(func(t *testing.T, raw []byte, content string, index int64) {
		Scan(raw)
		ChunkTS(raw)
		StreamID(raw)
		fr := AppendChunk(nil, "7a1c2e3f-0b4d-4e5f-8a9b-0c1d2e3f4a5b", index, content, 42)
		typ, idx, ok := Scan(fr)
		ts, tsOK := ChunkTS(fr)
		if !ok || typ != TypeChunk || idx != index || !tsOK || ts != 42 ||
			string(StreamID(fr)) != "7a1c2e3f-0b4d-4e5f-8a9b-0c1d2e3f4a5b" {
			t.Fatalf("scan of %s: %s %d %v, ts %d %v", fr, typ, idx, ok, ts, tsOK)
		}
		var c Chunk
		if err := json.Unmarshal(fr, &c); err != nil || c.Index != index {
			t.Fatalf("frame %s: %v", fr, err)
		}
	})
}
