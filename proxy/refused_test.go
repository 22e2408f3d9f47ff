package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

// A try counts as refused — sent to the next backend — only when the
// backend cannot have had the whole request; anything after the request
// went out whole is a 502, since the node may have acted on it.
func TestRefused(t *testing.T) {
	closedWrite := &net.OpError{Op: "readfrom", Net: "tcp", Err: &net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout")}, true},
		{fmt.Errorf("write: %w", syscall.EPIPE), true},
		{errors.New("http: server closed idle connection"), true}, // net/http's, unexported
		{closedWrite, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}, false},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{io.EOF, false},
		{io.ErrUnexpectedEOF, false},
	} {
		if got := refused(c.err); got != c.want {
			t.Errorf("refused(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
