package server

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"
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
//
// And it writes a data frame without blocking when nothing else is being
// written (tryText): the hub's dispatch goroutine then writes it itself,
// with no writer goroutine to wake. What the socket's buffer did not take
// stays in rest, which goes out before anything else is written.
type corkWriter struct {
	conn    net.Conn
	mu      sync.Mutex
	corked  bool
	buf     []byte
	shut    bool   // a close frame went out: no more data frames
	scratch []byte // header and payload of an uncorked frame, one write
	// raw is the connection's file descriptor, for tryText; nil when the
	// connection has none (then every frame goes through the writer).
	raw syscall.RawConn
	// rest is what a non-blocking write left of its frame.
	rest []byte
	// try is tryOnce bound once (a method value made per call would be an
	// allocation per frame); tried, triedN and triedErr are its argument
	// and results.
	try      func(fd uintptr) bool
	tried    []byte
	triedN   int
	triedErr error
}

func newCorkWriter(conn net.Conn) *corkWriter {
	w := &corkWriter{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
			w.try = w.tryOnce
		}
	}
	return w
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
		return w.connWriteLocked(p)
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
	_, err := w.connWriteLocked(w.buf)
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
	if len(payload) > scratchLimit {
		if err := w.flushRestLocked(); err != nil {
			return err
		}
		bufs := net.Buffers{textHeader(w.scratch[:0], len(payload)), payload}
		_, err := bufs.WriteTo(w.conn)
		return err
	}
	_, err := w.connWriteLocked(w.frameLocked(payload))
	w.trimScratchLocked()
	return err
}

// connWriteLocked writes p to the connection, after what a non-blocking
// write left of its frame: every blocking write goes through here, so
// nothing is ever written inside a frame's rest.
func (w *corkWriter) connWriteLocked(p []byte) (int, error) {
	if err := w.flushRestLocked(); err != nil {
		return 0, err
	}
	return w.conn.Write(p)
}

// frameLocked frames payload (of at most scratchLimit bytes) in scratch,
// header and payload, for one write.
func (w *corkWriter) frameLocked(payload []byte) []byte {
	w.scratch = append(textHeader(w.scratch[:0], len(payload)), payload...)
	return w.scratch
}

// trimScratchLocked lets a large frame's scratch go: a socket keeps a
// chunk frame's worth, not a catch-up's.
func (w *corkWriter) trimScratchLocked() {
	if cap(w.scratch) > 4<<10 {
		w.scratch = nil
	}
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

// flushRest writes what a non-blocking write left (blocking).
func (w *corkWriter) flushRest() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushRestLocked()
}

func (w *corkWriter) flushRestLocked() error {
	if len(w.rest) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.rest)
	w.rest = w.rest[:0]
	if cap(w.rest) > 4<<10 {
		w.rest = nil
	}
	return err
}

// tryText writes payload as one text frame without blocking, if nothing
// else is being written: taken reports that the frame is the socket's now —
// written, or written in part with the rest kept for the next write (rest:
// the caller must see that a writer flushes it). Not taken
// (another write is under way, a frame's rest waits, the frame is large,
// the connection has no descriptor), the caller queues the frame instead.
// An error means the connection failed.
func (w *corkWriter) tryText(payload []byte) (taken, rest bool, err error) {
	if w.raw == nil || len(payload) > scratchLimit || !w.mu.TryLock() {
		// TryLock: a control frame being written to a client that does
		// not read would hold the caller for the write timeout.
		return false, false, nil
	}
	defer w.mu.Unlock()
	if w.shut {
		return false, false, errSocketShut
	}
	if w.corked || len(w.rest) > 0 {
		return false, false, nil
	}
	w.tried = w.frameLocked(payload)
	err = w.raw.Write(w.try)
	n := w.triedN
	w.tried = nil
	if err == nil {
		err = w.triedErr
	}
	if err == syscall.EAGAIN || err == syscall.EINTR {
		err, n = nil, 0 // the buffer is full: all of it waits
	}
	if err != nil {
		return true, false, err
	}
	rest = n < len(w.scratch)
	if rest {
		w.rest = append(w.rest[:0], w.scratch[max(n, 0):]...)
	}
	w.trimScratchLocked()
	return true, rest, nil
}

// tryOnce is the raw write of tryText: one write(2), never a wait for the
// socket to be writable (it reports done whatever happened).
func (w *corkWriter) tryOnce(fd uintptr) bool {
	w.triedN, w.triedErr = syscall.Write(int(fd), w.tried)
	return true
}
