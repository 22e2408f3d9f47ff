package server

import (
	"bytes"
	"fmt"
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
	frames, rest := parseFrames(conn.data.Bytes())
	want := append(payloads, payloads[:3]...)
	if len(frames) != len(want) || len(rest) != 0 {
		t.Fatalf("%d frames and %d bytes after them, want %d frames", len(frames), len(rest), len(want))
	}
	for i, f := range frames {
		if f.op != 0x81 || !bytes.Equal(f.payload, want[i]) {
			t.Fatalf("frame %d: %#x, %d bytes, want a text frame of %d", i, f.op, len(f.payload), len(want[i]))
		}
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

// testFrame is a server frame as a client reads it: its first byte (FIN
// and opcode) and its payload.
type testFrame struct {
	op      byte
	payload []byte
}

// parseFrames reads unmasked frames off data; rest is an incomplete frame
// at its end (or bytes that are no frame: a masked one stops the parse).
func parseFrames(data []byte) (frames []testFrame, rest []byte) {
	for len(data) >= 2 && data[1]&0x80 == 0 {
		n, off := int(data[1]), 2
		switch n {
		case 126:
			if len(data) < 4 {
				return frames, data
			}
			n, off = int(data[2])<<8|int(data[3]), 4
		case 127:
			if len(data) < 10 {
				return frames, data
			}
			n = 0
			for _, b := range data[2:10] {
				n = n<<8 | int(b)
			}
			off = 10
		}
		if len(data) < off+n {
			break
		}
		frames = append(frames, testFrame{data[0], data[off : off+n]})
		data = data[off+n:]
	}
	return frames, data
}

// tcpPair is a loopback TCP connection with small kernel buffers, so that
// a test can fill them: server is the side the corkWriter writes to.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	server, client = s.(*net.TCPConn), c.(*net.TCPConn)
	server.SetWriteBuffer(4096)
	client.SetReadBuffer(4096)
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// tryText writes a frame at once when nothing else is written; once the
// socket's buffer is full it keeps what did not go out and refuses the
// next frames until that rest is written, and every later write — a data
// frame, a control frame, a cork — writes the rest first, so the client
// reads whole frames in order. Not taken: another write under way (it
// never waits for one), a frame beyond scratchLimit, a connection without
// a descriptor; refused after the close frame.
func TestCorkWriter_TryText(t *testing.T) {
	server, client := tcpPair(t)
	w := newCorkWriter(server)
	if w.raw == nil {
		t.Fatal("no descriptor for a TCP connection")
	}
	received := make(chan []byte, 1)
	read := func() {
		go func() {
			var all bytes.Buffer
			all.ReadFrom(client)
			received <- all.Bytes()
		}()
	}
	// The client does not read yet: frames go out until the buffers are
	// full, then one is kept in part (or whole) and pending.
	payload := func(i int) []byte {
		return append(bytes.Repeat([]byte{byte('a' + i%26)}, 1000), fmt.Sprint(i)...)
	}
	var sent [][]byte
	pending := false
	for i := 0; !pending; i++ {
		if i > 10_000 {
			t.Fatal("10,000 frames of 1 KB and the socket never filled")
		}
		taken, p, err := w.tryText(payload(i))
		if err != nil || !taken {
			t.Fatalf("frame %d: taken %v, %v", i, taken, err)
		}
		sent, pending = append(sent, payload(i)), p
	}
	if len(w.rest) == 0 {
		t.Fatal("pending with no rest kept")
	}
	if taken, _, err := w.tryText([]byte("next")); taken || err != nil {
		t.Fatalf("a frame while a rest waits: taken %v, %v", taken, err)
	}
	// Another write under way: not taken, and tryText did not wait for it.
	w.mu.Lock()
	if taken, _, _ := w.tryText([]byte("busy")); taken {
		t.Fatal("taken while another write holds the socket")
	}
	w.mu.Unlock()
	if taken, _, _ := w.tryText(make([]byte, scratchLimit+1)); taken {
		t.Fatal("a frame beyond scratchLimit taken")
	}
	// The client reads now; a pong (coder/websocket's control frame
	// write), a data frame and a corked batch follow the rest.
	read()
	if _, err := w.Write([]byte{0x8a, 0}); err != nil {
		t.Fatal(err)
	}
	if err := w.writeText([]byte("after")); err != nil {
		t.Fatal(err)
	}
	w.cork()
	w.writeText([]byte("corked"))
	if err := w.uncork(); err != nil {
		t.Fatal(err)
	}
	if taken, p, err := w.tryText([]byte("last")); !taken || p || err != nil {
		t.Fatalf("an idle socket: taken %v, pending %v, %v", taken, p, err)
	}
	w.Write([]byte{0x88, 2, 0x03, 0xe8}) // the close frame
	if _, _, err := w.tryText([]byte("late")); err != errSocketShut {
		t.Fatalf("a data frame after the close: %v", err)
	}
	server.CloseWrite()
	frames, rest := parseFrames(<-received)
	want := append(sent, nil, []byte("after"), []byte("corked"), []byte("last"), []byte{0x03, 0xe8})
	ops := make([]byte, len(want))
	for i := range ops {
		ops[i] = 0x81
	}
	ops[len(sent)], ops[len(ops)-1] = 0x8a, 0x88
	if len(frames) != len(want) || len(rest) != 0 {
		t.Fatalf("the client read %d frames and %d bytes more, want %d frames", len(frames), len(rest), len(want))
	}
	for i, f := range frames {
		if f.op != ops[i] || !bytes.Equal(f.payload, want[i]) {
			t.Fatalf("frame %d: %#x %q…, want %#x %q…", i, f.op, f.payload[:min(8, len(f.payload))], ops[i], want[i][:min(8, len(want[i]))])
		}
	}

	// A connection without a descriptor: every frame goes to the writer.
	if taken, _, _ := newCorkWriter(&countingConn{}).tryText([]byte("x")); taken {
		t.Fatal("taken without a descriptor")
	}
}
