package server

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// countingConn records the writes that reach the connection.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	data   bytes.Buffer
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.data.Write(p)
}

func TestCorkWriter(t *testing.T) {
	conn := &countingConn{}
	w := &corkWriter{conn: conn}
	w.Write([]byte("a"))
	if conn.writes != 1 {
		t.Fatalf("an uncorked write made %d writes", conn.writes)
	}
	// Corked: many writes, one write at uncork, in order.
	w.cork()
	var want bytes.Buffer
	want.WriteString("a")
	for i := range 100 {
		p := bytes.Repeat([]byte{byte('0' + i%10)}, 50)
		want.Write(p)
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	if conn.writes != 1 {
		t.Fatalf("corked writes reached the connection: %d writes", conn.writes)
	}
	if err := w.uncork(); err != nil {
		t.Fatal(err)
	}
	if conn.writes != 2 || !bytes.Equal(conn.data.Bytes(), want.Bytes()) {
		t.Fatalf("%d writes; data in order: %v", conn.writes, bytes.Equal(conn.data.Bytes(), want.Bytes()))
	}
	// A cork holds at most corkLimit: a long batch goes out in pieces.
	w.cork()
	big := bytes.Repeat([]byte("x"), 1000)
	for range 200 { // 200 KB
		w.Write(big)
	}
	w.uncork()
	if got := conn.writes - 2; got < 3 || got > 5 {
		t.Fatalf("200 KB corked took %d writes, want about 200 KB / %d", got, corkLimit)
	}
	if conn.data.Len() != 1+5000+200_000 {
		t.Fatalf("%d bytes written", conn.data.Len())
	}
	// Uncorking with nothing collected writes nothing.
	before := conn.writes
	w.cork()
	w.uncork()
	if conn.writes != before {
		t.Fatal("an empty uncork wrote")
	}
}

// writeText frames a payload as one unmasked text frame with the header
// length of its size (7-bit, 16-bit, 64-bit), in one write uncorked and
// into the cork while corked; after coder/websocket wrote a close frame it
// refuses, so that no data follows the close.
func TestCorkWriter_WriteText(t *testing.T) {
	conn := &countingConn{}
	w := &corkWriter{conn: conn}
	payloads := [][]byte{[]byte(`{"type":"chunk"}`), bytes.Repeat([]byte("a"), 125), bytes.Repeat([]byte("b"), 126),
		bytes.Repeat([]byte("c"), 65535), bytes.Repeat([]byte("d"), 65536)}
	for _, p := range payloads {
		if err := w.writeText(p); err != nil {
			t.Fatal(err)
		}
	}
	if conn.writes < len(payloads) || conn.writes > len(payloads)+2 {
		t.Fatalf("%d writes for %d frames", conn.writes, len(payloads))
	}
	w.cork()
	for _, p := range payloads[:3] {
		w.writeText(p)
	}
	before := conn.writes
	w.uncork()
	if conn.writes != before+1 {
		t.Fatalf("a corked batch of frames took %d writes", conn.writes-before)
	}
	// Read the frames back as a client would.
	data := conn.data.Bytes()
	for i, want := range append(payloads, payloads[:3]...) {
		if len(data) < 2 || data[0] != 0x81 || data[1]&0x80 != 0 {
			t.Fatalf("frame %d: header % x", i, data[:min(len(data), 2)])
		}
		n, off := int(data[1]), 2
		switch n {
		case 126:
			n, off = int(data[2])<<8|int(data[3]), 4
		case 127:
			n = 0
			for _, b := range data[2:10] {
				n = n<<8 | int(b)
			}
			off = 10
		}
		if n != len(want) || !bytes.Equal(data[off:off+n], want) {
			t.Fatalf("frame %d: %d bytes, want %d", i, n, len(want))
		}
		data = data[off+n:]
	}
	if len(data) != 0 {
		t.Fatalf("%d bytes after the frames", len(data))
	}
	// coder/websocket's close frame (a pong does not shut).
	w.Write([]byte{0x8a, 0})
	if err := w.writeText([]byte("x")); err != nil {
		t.Fatalf("after a pong: %v", err)
	}
	w.Write([]byte{0x88, 2, 0x03, 0xe8})
	if err := w.writeText([]byte("late")); err != errSocketShut {
		t.Fatalf("a data frame after the close: %v", err)
	}
}
