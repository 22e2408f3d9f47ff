package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// dialer opens client sockets, spreading their source addresses over
// 127.0.0.0/8 so that tens of thousands of sockets to one server port do not
// run out of ephemeral ports.
type dialer struct {
	wsURL  string
	spread bool
	next   atomic.Uint64
}

func newDialer(baseURL string, spread bool) (*dialer, error) {
	u := strings.TrimRight(baseURL, "/")
	switch {
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://")
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	default:
		return nil, fmt.Errorf("base URL %q must start with http:// or https://", baseURL)
	}
	return &dialer{wsURL: u + "/v1/ws", spread: spread}, nil
}

func (d *dialer) dial(ctx context.Context, token string) (*websocket.Conn, error) {
	nd := &net.Dialer{Timeout: 10 * time.Second}
	if d.spread {
		n := d.next.Add(1)
		// 127.0.x.y with x,y in 1..250: 62,500 source addresses.
		nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+(n/250)%250), byte(1+n%250))}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: nd.DialContext, DisableKeepAlives: true}}
	conn, _, err := websocket.Dial(ctx, d.wsURL, &websocket.DialOptions{
		HTTPClient: client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	return conn, nil
}

// Frame scanning: the load generator reads only what it measures, with a
// byte scan instead of a JSON decode per frame, so that it measures the
// server rather than itself.
var (
	keyType  = []byte(`"type":"`)
	keyIndex = []byte(`"index":`)
	keyLast  = []byte(`"last_index":`)
	keyTS    = []byte(`"ts":`)
	keySID   = []byte(`"stream_id":"`)
)

type frameKind int

const (
	kindOther frameKind = iota
	kindChunk
	kindDone
	kindSnapshot
	kindAccepted
	kindError
)

func kindOf(b []byte) frameKind {
	i := bytes.Index(b, keyType)
	if i < 0 {
		return kindOther
	}
	rest := b[i+len(keyType):]
	switch {
	case bytes.HasPrefix(rest, []byte(`chunk"`)):
		return kindChunk
	case bytes.HasPrefix(rest, []byte(`done"`)):
		return kindDone
	case bytes.HasPrefix(rest, []byte(`snapshot"`)):
		return kindSnapshot
	case bytes.HasPrefix(rest, []byte(`accepted"`)):
		return kindAccepted
	case bytes.HasPrefix(rest, []byte(`error"`)):
		return kindError
	}
	return kindOther
}

// intAfter parses the integer after the first occurrence of key.
func intAfter(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	return parseInt(b[i+len(key):])
}

// intAfterLast parses the integer after the last occurrence of key; ts is
// the last field of a chunk frame, after the content.
func intAfterLast(b, key []byte) (int64, bool) {
	i := bytes.LastIndex(b, key)
	if i < 0 {
		return 0, false
	}
	return parseInt(b[i+len(key):])
}

func parseInt(b []byte) (int64, bool) {
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

// streamIDOf returns the stream_id of a frame (a slice of it).
func streamIDOf(b []byte) []byte {
	i := bytes.Index(b, keySID)
	if i < 0 {
		return nil
	}
	rest := b[i+len(keySID):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// readFrame reads the next message of c into buf, grown as needed, and
// returns it; the bytes are valid until the next call with the same buffer.
func readFrame(c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.Reader(context.Background())
	if err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func writeJSON(ctx context.Context, c *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, b)
}
