package server

import (
	"net"
	"sync"
)

// corkWriter sits between an upgraded connection and its buffered writer:
// while corked, what the socket's frames flush collects here and goes out
// in one write at uncork. coder/websocket flushes every message, so a
// writer with a batch of frames queued (a catch-up, a socket following
// several streams) would cost a syscall per frame; corked, it costs one per
// batch (or per corkLimit bytes). Uncorked, writes pass straight through.
type corkWriter struct {
	conn   net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

// corkLimit bounds what a cork holds: past it, the collected bytes go out
// (a long catch-up is written in pieces of about this size).
const corkLimit = 64 << 10

func (w *corkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
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
