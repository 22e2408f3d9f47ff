// Package frontend holds chatstream's web page: plain ES modules, no build
// step and no network at run time, embedded into the binary.
package frontend

import (
	"embed"
	"io/fs"
	"strings"

	"github.com/chatstream/chatstream/clients/js"
)

//go:embed static
var static embed.FS

// Files returns the page's files: index.html at the root, the rest beside
// it, and the client package's modules under client/.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return withClient{page: sub, client: jsclient.Files()}
}

// withClient is the page's files with the client package's under client/.
type withClient struct{ page, client fs.FS }

func (w withClient) Open(name string) (fs.File, error) {
	if rest, ok := strings.CutPrefix(name, "client/"); ok {
		return w.client.Open(rest)
	}
	return w.page.Open(name)
}
