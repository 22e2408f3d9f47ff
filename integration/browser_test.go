package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
)

// chromiumPath finds the browser that `make test` installs.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: `make test` installs it (apt-get install chromium)")
	return ""
}

// newBrowser starts a headless Chromium for the test with the flags that
// work offline, and returns the context of its first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 860),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// newTab opens another tab in the browser of ctx.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	return ctx
}

// run runs browser actions with a deadline, failing the test on error.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// poll waits until a JavaScript predicate holds.
func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond))
}

// signIn opens the page and signs in as user.
func signIn(t *testing.T, ctx context.Context, n *node, user string) {
	t.Helper()
	run(t, ctx, "sign in",
		chromedp.Navigate(n.url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-name")),
		chromedp.SendKeys(chromedp.CSS("#signin-name"), user),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="connected"]`)),
	)
}

// openSignedIn opens the page at the conversation conv in tab, which must
// show it without asking to sign in.
func openSignedIn(t *testing.T, tab context.Context, n *node, conv, message string) {
	t.Helper()
	run(t, tab, "open the conversation's address", chromedp.Navigate(n.url+"/#"+conv),
		chromedp.WaitVisible(chromedp.CSS("#m-"+message)),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="connected"]`)))
	if eval[bool](t, tab, `!document.getElementById("signin").hidden`) {
		t.Fatal("the second tab asked to sign in")
	}
}

// sendFromPage types a message and presses Enter; it returns the stream id
// of the answer once it appears.
func sendFromPage(t *testing.T, ctx context.Context, text string) string {
	t.Helper()
	before := eval[int](t, ctx, `document.querySelectorAll("article.assistant").length`)
	// Typed keys would send at the first newline (Enter sends): a multi-line
	// message is put in the box, then Enter is pressed.
	typed := chromedp.SendKeys(chromedp.CSS("#input"), text)
	if strings.Contains(text, "\n") {
		typed = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](fmt.Sprintf(`document.getElementById("input").value = %q, null`, text))(ctx, t)
			return err
		})
	}
	run(t, ctx, "send",
		chromedp.Focus(chromedp.CSS("#input")),
		typed,
		chromedp.SendKeys(chromedp.CSS("#input"), kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#messages article.assistant:nth-of-type(%d)`, 2*(before+1)))),
	)
	return eval[string](t, ctx, `[...document.querySelectorAll("article.assistant")].at(-1).dataset.id`)
}

// waitStatus waits until the answer's element shows status.
func waitStatus(t *testing.T, ctx context.Context, id, status string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, poll(fmt.Sprintf(`document.getElementById("m-%s")?.dataset.status === %q`, id, status))); err != nil {
		t.Fatalf("wait for %s: %v; the page shows %q", status, err,
			eval[string](t, ctx, fmt.Sprintf(`document.getElementById("m-%s")?.outerHTML.slice(0, 300) ?? "no such message"`, id)))
	}
}

// pageText is the text the page shows for a message: a user message's,
// or an answer's text parts (not its Thinking or tool cards).
func pageText(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`(() => {
		const body = document.querySelector("#m-%s .body");
		if (!body) return "";
		if (body.closest("article.user")) return body.textContent;
		return [...body.querySelectorAll(":scope > .text")].map((e) => e.textContent).join("");
	})()`, id))
}

// renders is the text the page's Markdown renderer makes of content: what
// the page must show for a message stored with it.
func renders(t *testing.T, ctx context.Context, content string) string {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[string](fmt.Sprintf(`import("/assets/markdown.js").then((m) => {
		const d = document.createElement("div");
		d.append(m.renderMarkdown(%s));
		return d.textContent;
	})`, jsString(content)), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return v
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// showsStored checks that the page shows message id as stored, content
// and status.
func showsStored(t *testing.T, ctx context.Context, stored apiMessage) {
	t.Helper()
	if got, want := pageText(t, ctx, stored.ID), renders(t, ctx, stored.Content); got != want || want == "" {
		t.Fatalf("the page shows %q; stored (%s) renders as %q", got, stored.Status, want)
	}
	if got := eval[string](t, ctx, fmt.Sprintf(`document.getElementById("m-%s").dataset.status`, stored.ID)); got != string(stored.Status) {
		t.Fatalf("the page shows status %q, stored %q", got, stored.Status)
	}
}

// waitChunks waits until the page shows some of the answer's text.
func waitChunks(t *testing.T, ctx context.Context, id string, chars int) {
	t.Helper()
	run(t, ctx, "wait for text", poll(fmt.Sprintf(`(document.querySelector("#m-%s .body")?.textContent.length ?? 0) >= %d`, id, chars)))
}

// convID is the conversation the page shows, from its address.
func convID(t *testing.T, ctx context.Context) string {
	return eval[string](t, ctx, `location.hash.slice(1)`)
}

// slowDemo is paced so that a test can act mid-stream: ~150 words at 40/s.
func slowDemo() llm.Provider { return llm.NewDemo(llm.DemoConfig{TokensPerSec: 40}) }

func TestBrowser_SendStreamsAndCompletes(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Provider: slowDemo()})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	id := sendFromPage(t, ctx, "How does streaming work?")
	waitStatus(t, ctx, id, "streaming")
	waitStatus(t, ctx, id, "complete")
	tok := n.devToken(t, "alice")
	stored := n.message(t, tok, convID(t, ctx), id)
	if stored.Status != "complete" {
		t.Fatalf("stored %+v", stored)
	}
	showsStored(t, ctx, stored)
	// The Markdown was rendered: the demo answer has a list and a code block.
	lists := eval[int](t, ctx, fmt.Sprintf(`document.querySelectorAll("#m-%s li").length`, id))
	code := eval[int](t, ctx, fmt.Sprintf(`document.querySelectorAll("#m-%s pre code").length`, id))
	if lists == 0 && code == 0 {
		t.Fatal("the answer's Markdown was not rendered")
	}
}

func TestBrowser_TwoTabsFollowLive(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Provider: slowDemo()})
	tab1 := newBrowser(t)
	signIn(t, tab1, n, "alice")
	first := sendFromPage(t, tab1, "/demo tokens=5 rate=0\nfirst")
	waitStatus(t, tab1, first, "complete")
	conv := convID(t, tab1)

	// The second tab opens the conversation's address, already signed in.
	tab2 := newTab(t, tab1)
	openSignedIn(t, tab2, n, conv, first)

	id := sendFromPage(t, tab1, "second question from tab one")
	// Tab 2 shows the new user message and follows the answer live.
	tctx, cancel := context.WithTimeout(tab2, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, poll(
		`[...document.querySelectorAll("article.user .body")].some(e => e.textContent === "second question from tab one")`)); err != nil {
		t.Fatalf("user message in tab 2: %v; tab 2 shows %s", err, eval[string](t, tab2,
			`JSON.stringify({at: location.hash, conn: document.getElementById("conn").dataset.state,
			  messages: [...document.querySelectorAll("#messages article")].map(a => a.className + ":" + a.dataset.status + ":" + a.querySelector(".body").textContent.slice(0, 40))})`))
	}
	waitStatus(t, tab2, id, "streaming")
	waitStatus(t, tab2, id, "complete")
	waitStatus(t, tab1, id, "complete")
	if a, b := pageText(t, tab1, id), pageText(t, tab2, id); a != b || a == "" {
		t.Fatalf("tabs differ:\n%q\n%q", a, b)
	}
	showsStored(t, tab2, n.message(t, n.devToken(t, "alice"), conv, id))
}

func TestBrowser_ReloadAndDropMidStream(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Provider: slowDemo()})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	tok := n.devToken(t, "alice")

	t.Run("Reload", func(t *testing.T) {
		id := sendFromPage(t, ctx, "reload while you answer")
		waitChunks(t, ctx, id, 40)
		run(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="connected"]`)))
		waitStatus(t, ctx, id, "complete")
		showsStored(t, ctx, n.message(t, tok, convID(t, ctx), id))
	})
	t.Run("SocketDrop", func(t *testing.T) {
		id := sendFromPage(t, ctx, "drop the socket while you answer")
		waitChunks(t, ctx, id, 40)
		// The page's test hook drops its socket as a network failure would.
		eval[any](t, ctx, `window.chatstream.dropSocket(), null`)
		waitStatus(t, ctx, id, "complete")
		showsStored(t, ctx, n.message(t, tok, convID(t, ctx), id))
	})
}

func TestBrowser_Stop(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: 20})})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	id := sendFromPage(t, ctx, "/demo tokens=400\na long answer please")
	waitChunks(t, ctx, id, 10)
	run(t, ctx, "stop", chromedp.Click(chromedp.CSS("#stop")))
	waitStatus(t, ctx, id, "cancelled")
	badge := eval[string](t, ctx, fmt.Sprintf(`document.querySelector("#m-%s .badge").textContent`, id))
	if badge != "stopped" {
		t.Fatalf("badge = %q, want stopped", badge)
	}
	showsStored(t, ctx, n.message(t, n.devToken(t, "alice"), convID(t, ctx), id))
}

func TestBrowser_MessagesAreText(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "mallory")
	evil := `<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> [x](javascript:window.__xss=3) **bold**`
	id := sendFromPage(t, ctx, evil)
	waitStatus(t, ctx, id, "complete")
	userText := eval[string](t, ctx, `[...document.querySelectorAll("article.user .body")].at(-1).textContent`)
	injected := eval[bool](t, ctx, `document.querySelectorAll("#messages img, #messages script, #messages a[href^='javascript']").length > 0`)
	xss := eval[bool](t, ctx, `window.__xss !== undefined`)
	if userText != evil {
		t.Fatalf("user message shows %q, want the text as typed", userText)
	}
	if injected || xss {
		t.Fatalf("markup from a message reached the page: elements=%v script ran=%v", injected, xss)
	}
}

func TestBrowser_Screenshots(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	// An answer with all its parts: Thinking, a tool card, text, usage; then
	// a call that waits for approval.
	id := sendFromPage(t, ctx, "/demo think=25 tool=calculator\nHow does chatstream deliver chunks? And what is 6 * 7?")
	waitStatus(t, ctx, id, "complete")
	// Regenerated once: the answer shows its versions, ‹ 2/2 ›.
	clickEnabled(t, ctx, "regenerate", "#m-"+id+" button.regenerate",
		poll(fmt.Sprintf(`!document.getElementById("m-%s") && document.querySelectorAll("#messages article.assistant").length === 1`, id)))
	id = eval[string](t, ctx, `document.querySelector("#messages article.assistant").dataset.id`)
	waitStatus(t, ctx, id, "complete")
	run(t, ctx, "open Thinking", clickJS("#m-"+id+" details.thinking summary"))
	waiting := sendFromPage(t, ctx, "/demo tool=save_note\nRemember that chunks are exactly-once")
	run(t, ctx, "approval card", poll(fmt.Sprintf(`document.querySelector('#m-%s .tool[data-state="waiting"]') !== null`, waiting)))
	// The desktop shot shows the first answer from its Thinking on; the
	// phone's the call that waits.
	scroll := map[string]string{
		"screenshot-desktop.png": fmt.Sprintf(`(document.querySelector("#m-%s .thinking").scrollIntoView(), true)`, id),
		"screenshot-phone.png":   `(document.getElementById("messages").scrollTop = 1e9, true)`,
	}
	dir := os.Getenv("SCREENSHOT_DIR") // `make screenshots` sets it to docs/
	if dir == "" {
		dir = t.TempDir()
	}
	for _, shot := range []struct {
		name string
		w, h int64
	}{{"screenshot-desktop.png", 1280, 860}, {"screenshot-phone.png", 390, 844}} {
		// Layout settles once the sidebar has slid out of a phone's view.
		run(t, ctx, shot.name, chromedp.EmulateViewport(shot.w, shot.h),
			poll(fmt.Sprintf(`window.innerWidth === %d && (innerWidth > 720 || document.getElementById("sidebar").getBoundingClientRect().right <= 0)`, shot.w)),
			poll(scroll[shot.name]))
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if len(png) < 1000 || !strings.HasPrefix(string(png), "\x89PNG") {
			t.Fatalf("%s: not a PNG (%d bytes)", shot.name, len(png))
		}
		if err := os.WriteFile(filepath.Join(dir, shot.name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A refused send (the user's rate is spent) is shown with the server's
// message, and the text typed stays in the box.
func TestBrowser_RateLimitShown(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, Limits: limits.Config{SendRate: 1}})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	id := sendFromPage(t, ctx, "/demo tokens=3\nfirst")
	waitStatus(t, ctx, id, "complete")
	run(t, ctx, "second send",
		chromedp.Focus(chromedp.CSS("#input")),
		chromedp.SendKeys(chromedp.CSS("#input"), "second"),
		chromedp.SendKeys(chromedp.CSS("#input"), kb.Enter),
		poll(`[...document.querySelectorAll(".flash")].some((e) => e.textContent.includes("Too many messages"))`),
	)
	// (chromedp types Enter's character too, which a real keyboard's
	// prevented keydown would not.)
	if v := eval[string](t, ctx, `document.getElementById("input").value`); strings.TrimSpace(v) != "second" {
		t.Fatalf("the refused message left the box: %q", v)
	}
}
