package protocol

import (
	"bytes"
	"strconv"
)

var (
	typeKey      = []byte(`"type":"`)
	indexKey     = []byte(`"index":`)
	lastIndexKey = []byte(`"last_index":`)
	tsKey        = []byte(`"ts":`)
	streamIDKey  = []byte(`"stream_id":"`)
)

// Scan reads the type and the position of a chunk, done or snapshot frame
// without decoding it: for a chunk its index, for a done or snapshot frame
// its last_index. Other frames give their type only. A key found in the
// text cannot be mistaken for the field: inside a JSON string its quotes
// are escaped.
func Scan(b []byte) (typ string, index int64, ok bool) {
	i := bytes.Index(b, typeKey)
	if i < 0 {
		return "", 0, false
	}
	rest := b[i+len(typeKey):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", 0, false
	}
	var key []byte
	switch string(rest[:end]) {
	case TypeChunk:
		typ, key = TypeChunk, indexKey
	case TypeDone:
		typ, key = TypeDone, lastIndexKey
	case TypeSnapshot:
		typ, key = TypeSnapshot, lastIndexKey
	default:
		return string(rest[:end]), 0, true
	}
	j := bytes.Index(rest, key)
	if j < 0 {
		return "", 0, false
	}
	v, ok := leadingInt(rest[j+len(key):])
	if !ok {
		return "", 0, false
	}
	return typ, v, true
}

// ChunkTS reads the ts of a chunk frame (its last field, after the content)
// without decoding it.
func ChunkTS(b []byte) (int64, bool) {
	i := bytes.LastIndex(b, tsKey)
	if i < 0 {
		return 0, false
	}
	return leadingInt(b[i+len(tsKey):])
}

// StreamID returns the stream_id of a frame, as a slice of it.
func StreamID(b []byte) []byte {
	i := bytes.Index(b, streamIDKey)
	if i < 0 {
		return nil
	}
	rest := b[i+len(streamIDKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// leadingInt parses the integer b starts with.
func leadingInt(b []byte) (int64, bool) {
	n := 0
	if n < len(b) && b[n] == '-' {
		n++
	}
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	return v, err == nil
}
