package streaming

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/chatstream/chatstream"
)

// Frame types as they appear in the "type" field.
const (
	FrameChunk    = "chunk"
	FrameDone     = "done"
	FrameSnapshot = "snapshot"
	FrameMessage  = "message"
)

// AppendChunkFrame appends the WebSocket frame of one chunk to dst. The
// worker builds it once; Redis stores and publishes these very bytes, and the
// hub hands them unchanged to every socket.
func AppendChunkFrame(dst []byte, streamID string, index int64, content string, ts int64) []byte {
	dst = append(dst, `{"type":"chunk","stream_id":"`...)
	dst = append(dst, streamID...)
	dst = append(dst, `","index":`...)
	dst = strconv.AppendInt(dst, index, 10)
	dst = append(dst, `,"content":`...)
	dst = AppendJSONString(dst, content)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// Done is the end of a stream as the done frame tells it.
type Done struct {
	Type         string              `json:"type"`
	StreamID     string              `json:"stream_id"`
	MessageID    string              `json:"message_id"`
	Status       chatstream.Status   `json:"status"`
	LastIndex    int64               `json:"last_index"`
	Error        *chatstream.Failure `json:"error,omitempty"`
	FinishReason string              `json:"finish_reason,omitempty"`
}

// Frame returns d encoded.
func (d Done) Frame() []byte {
	b, _ := json.Marshal(d)
	return b
}

// DoneFrame returns the done frame of a stream that ended without a finish
// reason.
func DoneFrame(streamID string, status chatstream.Status, lastIndex int64, failure *chatstream.Failure) []byte {
	return Done{Type: FrameDone, StreamID: streamID, MessageID: streamID, Status: status, LastIndex: lastIndex, Error: failure}.Frame()
}

// messageDone is the done frame of a stream as its final message in
// Postgres tells it.
func messageDone(m *chatstream.Message) []byte {
	return Done{Type: FrameDone, StreamID: m.ID, MessageID: m.ID, Status: m.Status, LastIndex: m.LastIndex,
		Error: m.Error, FinishReason: m.FinishReason}.Frame()
}

// Chunk is a decoded chunk frame.
type Chunk struct {
	StreamID string `json:"stream_id"`
	Index    int64  `json:"index"`
	Content  string `json:"content"`
	TS       int64  `json:"ts"`
}

var (
	typeKey      = []byte(`"type":"`)
	indexKey     = []byte(`"index":`)
	lastIndexKey = []byte(`"last_index":`)
	tsKey        = []byte(`"ts":`)
	streamIDKey  = []byte(`"stream_id":"`)
)

// ScanFrame reads the type and the position of a chunk, done or snapshot
// frame without decoding it: for a chunk its index, for a done or snapshot
// frame its last_index. Other frames give their type only. A key found in
// the text cannot be mistaken for the field: inside a JSON string its quotes
// are escaped.
func ScanFrame(b []byte) (typ string, index int64, ok bool) {
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
	case FrameChunk:
		typ, key = FrameChunk, indexKey
	case FrameDone:
		typ, key = FrameDone, lastIndexKey
	case FrameSnapshot:
		typ, key = FrameSnapshot, lastIndexKey
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

// FrameStreamID returns the stream_id of a frame, as a slice of it.
func FrameStreamID(b []byte) []byte {
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

const hex = "0123456789abcdef"

// AppendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does; <, > and & are left as they are (frames are not HTML).
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
