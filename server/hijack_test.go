package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// hijacked serves one route that hijacks through smallBuffers, hands what
// it got to the test, and holds the connection until the test is done.
func hijacked(t *testing.T, send string) (brw *bufio.ReadWriter, server, client net.Conn) {
	t.Helper()
	gin.SetMode(gin.TestMode)
	type result struct {
		brw  *bufio.ReadWriter
		conn net.Conn
		err  error
	}
	got := make(chan result, 1)
	r := gin.New()
	r.GET("/", func(c *gin.Context) {
		c.Writer.WriteHeader(http.StatusSwitchingProtocols)
		c.Writer.WriteHeaderNow()
		conn, brw, err := (&smallBuffers{ResponseWriter: c.Writer}).Hijack()
		got <- result{brw, conn, err}
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	client, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if _, err := io.WriteString(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"+send); err != nil {
		t.Fatal(err)
	}
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Cleanup(func() { res.conn.Close() })
	// The 101 reached the client before the hijack returned.
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	return res.brw, res.conn, client
}

func TestSmallBuffers_Sizes(t *testing.T) {
	brw, _, client := hijacked(t, "")
	if got := brw.Reader.Size(); got != socketReadBuffer {
		t.Errorf("read buffer %d bytes, want %d", got, socketReadBuffer)
	}
	if got := brw.Writer.Size(); got != socketWriteBuffer {
		t.Errorf("write buffer %d bytes, want %d", got, socketWriteBuffer)
	}
	// Both directions work through them.
	if _, err := io.WriteString(client, "ping"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(brw, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// Bytes the client sent right behind the upgrade request were read by
// net/http already; they must not be lost with its buffer.
func TestSmallBuffers_KeepsBytesAfterTheRequest(t *testing.T) {
	brw, conn, _ := hijacked(t, "early bytes")
	// A lost byte shows as a read that never ends; fail instead of hanging.
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len("early bytes"))
	if _, err := io.ReadFull(brw, b); err != nil {
		t.Fatal(err)
	}
	if string(b) != "early bytes" {
		t.Fatalf("read %q", b)
	}
}
