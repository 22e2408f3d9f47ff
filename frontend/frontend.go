// Package frontend holds chatstream's web page: plain ES modules, no build
// step and no network at run time, embedded into the binary.
package frontend

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files returns the page's files: index.html at the root, the rest beside it.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}
