package server

import (
	"io/fs"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
)

// routePage serves the web page: index.html at / (and for any unknown GET
// that a browser asks HTML for), its files under /assets/.
func (s *Server) routePage(e *gin.Engine, files fs.FS) {
	assets := http.FileServer(http.FS(files))
	e.GET("/", s.servePage)
	e.HEAD("/", s.servePage)
	// Browsers ask for /favicon.ico whatever the page links: the page's icon
	// answers it (an SVG; every current browser takes one there).
	e.GET("/favicon.ico", func(c *gin.Context) {
		b, err := fs.ReadFile(files, "favicon.svg")
		if err != nil {
			writeError(c, err)
			return
		}
		c.Header("Cache-Control", "public, max-age=86400")
		c.Data(http.StatusOK, "image/svg+xml", b)
	})
	e.GET("/assets/*file", func(c *gin.Context) {
		c.Header("X-Content-Type-Options", "nosniff")
		c.Header("Cache-Control", "no-cache")
		r := c.Request.Clone(c.Request.Context())
		r.URL.Path = c.Param("file")
		if r.URL.Path == "/" || r.URL.Path == "/index.html" {
			writeError(c, chatstream.Errorf(chatstream.ENOTFOUND, "No such file."))
			return
		}
		assets.ServeHTTP(c.Writer, r)
	})
	s.page = files
}

func (s *Server) servePage(c *gin.Context) {
	b, err := fs.ReadFile(s.page, "index.html")
	if err != nil {
		writeError(c, err)
		return
	}
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("X-Frame-Options", "DENY")
	c.Header("Referrer-Policy", "no-referrer")
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, "text/html; charset=utf-8", b)
}

// wantsPage reports whether an unmatched request is a browser navigation.
func wantsPage(r *http.Request) bool {
	return r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/v1/") &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}
