package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/limits"
)

// The JavaScript client package (clients/js) against a real node: its
// types check, it packs with its declarations, and its tests (node --test)
// pass — exactly-once across forced disconnects, one shared socket, typed
// parts, the SSE fallback, typed errors.
func TestJSClient(t *testing.T) {
	dir, err := filepath.Abs("../clients/js")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws", "package.json")); err != nil {
		t.Fatalf("the client's dev packages are not installed in %s: `make test` installs them (scripts/node-deps.sh): %v", dir, err)
	}
	n := demoNode(t, app.Config{Workers: 4, Limits: limits.Off()})
	run := func(name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CHATSTREAM_URL="+n.url, "npm_config_loglevel=error")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("node", "node_modules/typescript/bin/tsc", "-p", "jsconfig.json", "--noEmit")
	out := run("node", "--test", "--test-reporter=spec", "test/")
	t.Log(out)
	if !strings.Contains(out, "fail 0") && !strings.Contains(out, "ℹ fail 0") {
		t.Fatalf("node --test did not report 0 failures:\n%s", out)
	}
	packed := run("npm", "pack", "--dry-run", "--json")
	for _, f := range []string{"src/index.js", "src/socket.js", "dist/index.d.ts", "README.md"} {
		if !strings.Contains(packed, `"path": "`+f+`"`) {
			t.Errorf("npm pack leaves out %s:\n%s", f, packed)
		}
	}
}
