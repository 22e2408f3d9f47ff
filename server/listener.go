package server

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// capListener accepts at most max open connections per client address;
// more are closed at once. Addresses of trusted proxies are not capped:
// every client behind them shares their address.
type capListener struct {
	net.Listener
	max     int
	trusted []netip.Prefix
	refused prometheus.Counter

	mu   sync.Mutex
	open map[netip.Addr]int
}

func newCapListener(ln net.Listener, max int, trusted []netip.Prefix, refused prometheus.Counter) *capListener {
	return &capListener{Listener: ln, max: max, trusted: trusted, refused: refused, open: map[netip.Addr]int{}}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return c, nil // not an IP connection (a test pipe): not capped
		}
		addr := ap.Addr().Unmap()
		if l.isTrusted(addr) {
			return c, nil
		}
		l.mu.Lock()
		if l.open[addr] >= l.max {
			l.mu.Unlock()
			l.refused.Inc()
			_ = c.Close()
			continue
		}
		l.open[addr]++
		l.mu.Unlock()
		return &cappedConn{Conn: c, l: l, addr: addr}, nil
	}
}

func (l *capListener) isTrusted(addr netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func (l *capListener) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[addr]--; l.open[addr] <= 0 {
		delete(l.open, addr)
	}
}

// cappedConn gives its place back when it closes (once, however often it is
// closed; a hijacked socket is closed by its WebSocket).
type cappedConn struct {
	net.Conn
	l    *capListener
	addr netip.Addr
	once sync.Once
}

// SyscallConn hands out the connection's file descriptor, as the
// *net.TCPConn it wraps does, so that a socket can write without blocking
// (corkWriter.tryText).
func (c *cappedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}
