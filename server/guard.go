package server

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
)

// bodyDeadline bounds how long a request's body may take to arrive: a
// client that trickles it (a byte every few seconds) is cut off at
// BodyTimeout, whether or not a handler reads the body (net/http reads
// what is left after a 401 too). Requests without a body are left alone,
// so long responses (sockets, event streams) are not cut.
func (s *Server) bodyDeadline(c *gin.Context) {
	if c.Request.ContentLength != 0 && !c.IsWebsocket() {
		_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
	}
	c.Next()
}

// loopbackHosts are the hosts served by default with AuthDev: a page on
// another name that resolves to 127.0.0.1 (DNS rebinding) must not reach a
// node that mints tokens for anyone.
var loopbackHosts = []string{"localhost", "*.localhost", "127.0.0.1", "::1"}

// allowedHost refuses requests whose Host is not served here. The health
// and metrics routes answer any Host (probes use addresses).
func (s *Server) allowedHost(c *gin.Context) {
	if len(s.hosts) == 0 {
		c.Next()
		return
	}
	switch c.Request.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		c.Next()
		return
	}
	host := c.Request.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if !matchHost(s.hosts, host) {
		writeError(c, chatstream.Errorf(chatstream.EINVALID,
			"Host %q is not served here; list it in ALLOWED_HOSTS.", truncate(c.Request.Host, 64)))
		return
	}
	c.Next()
}

// matchHost reports whether host matches one of patterns: a name, an
// address, or "*.example.com" for any name under example.com.
func matchHost(patterns []string, host string) bool {
	for _, p := range patterns {
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if p == host {
			return true
		}
	}
	return false
}
