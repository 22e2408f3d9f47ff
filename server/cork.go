package server

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
)

// corkWriter sits between an upgraded connection and its buffered writer:
// while corked, what the socket's frames flush collects here and goes out
// in one write at uncork. coder/websocket flushes every message, so a
// writer with a batch of frames queued (a catch-up, a socket following
// several streams) would cost a syscall per frame; corked, it costs one per
// batch (or per corkLimit bytes). Uncorked, writes pass straight through.
//
// It also writes the session's data frames itself (writeText), framed
// here: coder/websocket's per-message writer (a channel-based lock, a
// message writer reset, a header written byte by byte into its buffer) cost
// ~8% of the server's CPU on the fan-out rows for frames that are the same
// bytes for every follower. coder/websocket still writes the control frames
// (pongs, the close), each one Write of a whole frame (they fit its buffer,
// flushed per frame), so the two never interleave inside a frame; once it
// writes a close frame, writeText refuses (no data after the close).
type corkWriter struct {
	conn    net.Conn
	mu      sync.Mutex
	corked  bool
	buf     []byte
	shut    bool   // a close frame went out: no more data frames
	scratch []byte // header and payload of an uncorked frame, one write
}

// errSocketShut refuses a data frame after the close frame.
var errSocketShut = errors.New("websocket: closed")

// corkLimit bounds what a cork holds: past it, the collected bytes go out
// (a long catch-up is written in pieces of about this size).
const corkLimit = 64 << 10

func (w *corkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(p) > 0 && p[0]&0x0f == opClose {
		w.shut = true
	}
	if !w.corked {
		return w.conn.Write(p)
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= corkLimit {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// cork starts collecting writes.
func (w *corkWriter) cork() {
	w.mu.Lock()
	w.corked = true
	w.mu.Unlock()
}

// uncork writes what was collected, in one write, and lets writes through
// again.
func (w *corkWriter) uncork() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.corked = false
	return w.flushLocked()
}

func (w *corkWriter) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.buf)
	if cap(w.buf) > corkLimit*2 {
		w.buf = nil // a burst's storage goes once it is over
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

// WebSocket frame bits (RFC 6455 5.2) of the frames written here: a server
// sends unmasked frames.
const (
	finText = 0x81 // FIN, opcode 1 (text)
	opClose = 0x8
)

// scratchLimit is the largest frame copied into scratch to go out in one
// write; a larger one goes as two buffers in one writev.
const scratchLimit = 16 << 10

// writeText writes payload as one unfragmented text frame: into the cork
// while corked, else in one write.
func (w *corkWriter) writeText(payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.shut {
		return errSocketShut
	}
	// The header goes straight into the buffer it is written from: no
	// header array of its own, which would escape (an allocation a frame).
	if w.corked {
		w.buf = append(textHeader(w.buf, len(payload)), payload...)
		if len(w.buf) >= corkLimit {
			return w.flushLocked()
		}
		return nil
	}
	w.scratch = textHeader(w.scratch[:0], len(payload))
	if len(payload) > scratchLimit {
		bufs := net.Buffers{w.scratch, payload}
		_, err := bufs.WriteTo(w.conn)
		return err
	}
	w.scratch = append(w.scratch, payload...)
	_, err := w.conn.Write(w.scratch)
	if cap(w.scratch) > 4<<10 {
		w.scratch = nil // a socket keeps a chunk frame's worth, not a catch-up's
	}
	return err
}

// textHeader appends the header of an unmasked final text frame of n bytes.
func textHeader(b []byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, finText, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, finText, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(b, finText, 127), uint64(n))
}
