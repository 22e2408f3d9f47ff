package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
	return writeRaw(ctx, c, string(b))
}

// writeRaw writes one text frame as it is.
func writeRaw(ctx context.Context, c *websocket.Conn, frame string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, []byte(frame))
}
