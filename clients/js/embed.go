// Package jsclient holds the JavaScript client package (@chatstream/client)
// so that the node can serve its ES modules to the web page, which uses
// them as they are: no build step for the page.
package jsclient

import (
	"embed"
	"io/fs"
)

//go:embed src/*.js
var src embed.FS

// Files returns the package's modules (index.js, socket.js, …).
func Files() fs.FS {
	sub, err := fs.Sub(src, "src")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}
