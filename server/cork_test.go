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
