package server

import (
	"bufio"
	"net"

	"github.com/gin-gonic/gin"
)

// Buffer sizes of an upgraded connection. net/http hands a hijacked
// connection over with a 4 KiB read and a 4 KiB write buffer, and
// coder/websocket keeps them for the socket's life: 8 KiB of the ~20 KiB an
// idle socket costs. Client frames are small (subscribe, unsubscribe,
// watch), and a chunk frame is a few hundred bytes, so smaller buffers cost
// no extra syscall for the frames that matter; a larger frame is written in
// two syscalls instead of one, and a larger read goes straight to its
// destination, as bufio does for any read bigger than its buffer.
const (
	socketReadBuffer  = 512
	socketWriteBuffer = 1024
)

// smallBuffers is the ResponseWriter handed to websocket.Accept: the same as
// Gin's, except that Hijack returns the connection with the smaller buffers
// above, writing through a corkWriter (kept in cork for the session). It
// embeds gin.ResponseWriter so that Accept still finds WriteHeaderNow and
// flushes the 101 response before hijacking.
type smallBuffers struct {
	gin.ResponseWriter
	cork *corkWriter
}

func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := w.ResponseWriter.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	r := brw.Reader
	// Bytes the client sent right behind its upgrade request are already in
	// net/http's reader; keep that reader then (Accept carries its buffered
	// bytes over). Browsers wait for the 101, so this is the rare case.
	if r.Buffered() == 0 {
		r = bufio.NewReaderSize(conn, socketReadBuffer)
	}
	w.cork = newCorkWriter(conn)
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(w.cork, socketWriteBuffer)), nil
}
