package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/llm"
)

// bodyHTML is how the page draws an answer.
func bodyHTML(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`document.querySelector("#m-%s .body")?.innerHTML ?? ""`, id))
}

// Reasoning streams into an open Thinking block that closes once the
// answer goes on; a tool call shows as a card with its arguments and
// result; the usage is under the answer. A reload draws the stored parts
// exactly as the stream drew them.
func TestBrowser_ThinkingAndToolCard(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: 40})})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	id := sendFromPage(t, ctx, "/demo think=30 tool=calculator\nWhat is (17 + 25) * 3?")
	m := "#m-" + id
	run(t, ctx, "reasoning streams in an open Thinking block",
		poll(fmt.Sprintf(`document.querySelector("%s details.thinking.live")?.open === true &&
			document.querySelector("%s .thinking-text").textContent.split(" ").length > 5`, m, m)))
	run(t, ctx, "the tool card shows the result",
		poll(fmt.Sprintf(`document.querySelector('%s .tool[data-state="done"] .tool-output')?.textContent === "126"`, m)))
	waitStatus(t, ctx, id, "complete")
	if open := eval[bool](t, ctx, fmt.Sprintf(`document.querySelector("%s details.thinking").open`, m)); open {
		t.Fatal("the Thinking block is still open after the answer")
	}
	if name := eval[string](t, ctx, fmt.Sprintf(`document.querySelector("%s .tool .tool-name").textContent`, m)); name != "calculator" {
		t.Fatalf("tool card name %q", name)
	}
	if args := eval[string](t, ctx, fmt.Sprintf(`document.querySelector("%s .tool .tool-args").textContent`, m)); !strings.Contains(args, `"expression": "(17 + 25) * 3"`) {
		t.Fatalf("tool card arguments %q", args)
	}
	tok := n.devToken(t, "alice")
	stored := n.message(t, tok, convID(t, ctx), id)
	showsStored(t, ctx, stored)
	want := fmt.Sprintf("%d tokens · %d in · %d out", stored.Usage.TotalTokens, stored.Usage.PromptTokens, stored.Usage.CompletionTokens)
	if got := eval[string](t, ctx, fmt.Sprintf(`document.querySelector("%s .meta .usage")?.textContent ?? ""`, m)); got != want {
		t.Fatalf("usage shown %q, stored %q", got, want)
	}
	// The user opens the Thinking block; it stays open.
	run(t, ctx, "open Thinking", clickJS(m+" details.thinking summary"),
		poll(fmt.Sprintf(`document.querySelector("%s details.thinking").open`, m)))
	live := strings.Replace(bodyHTML(t, ctx, id), "<details class=\"thinking\" open=\"\">", "<details class=\"thinking\">", 1)
	run(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="connected"]`)), chromedp.WaitVisible(chromedp.CSS(m+" .tool")))
	if reloaded := bodyHTML(t, ctx, id); reloaded != live {
		t.Fatalf("after a reload the answer is drawn\n%s\nwhile streamed it was\n%s", reloaded, live)
	}
}

// A call that asks for approval waits with Approve and Deny in every tab
// (a tab reloaded meanwhile too); answering in one tab updates the others.
func TestBrowser_ApprovalInTwoTabs(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: 40})})
	tabA := newBrowser(t)
	signIn(t, tabA, n, "alice")
	first := sendFromPage(t, tabA, "/demo tokens=3 rate=0\nhello")
	waitStatus(t, tabA, first, "complete")
	conv := convID(t, tabA)
	tabB := newTab(t, tabA)
	openSignedIn(t, tabB, n, conv, first)
	waiting := func(id string) chromedp.Action[chromedp.Void] {
		return poll(fmt.Sprintf(`document.querySelector('#m-%s .tool[data-state="waiting"] .tool-actions button.approve') !== null`, id))
	}

	t.Run("approve in tab A", func(t *testing.T) {
		id := sendFromPage(t, tabA, "/demo tool=save_note\nRemember to buy milk")
		run(t, tabA, "card waits in tab A", waiting(id))
		runOrShow(t, tabB, "card waits in tab B", waiting(id))
		// A reload mid-approval shows the pending card from the log.
		run(t, tabB, "reload tab B", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="connected"]`)), waiting(id))
		if state := eval[string](t, tabB, fmt.Sprintf(`document.getElementById("m-%s").dataset.status`, id)); state != "streaming" {
			t.Fatalf("reloaded tab shows status %q while the call waits", state)
		}
		run(t, tabA, "approve", clickJS(fmt.Sprintf(`#m-%s .tool-actions button.approve`, id)))
		for name, tab := range map[string]context.Context{"A": tabA, "B": tabB} {
			run(t, tab, "tab "+name+" shows the result", poll(fmt.Sprintf(
				`document.querySelector('#m-%s .tool[data-state="done"] .tool-output')?.textContent.startsWith("Saved the note")`, id)))
			waitStatus(t, tab, id, "complete")
		}
		if a, b := bodyHTML(t, tabA, id), bodyHTML(t, tabB, id); a != b {
			t.Fatalf("tabs differ:\n%s\n%s", a, b)
		}
		showsStored(t, tabB, n.message(t, n.devToken(t, "alice"), conv, id))
	})
	t.Run("deny in tab B", func(t *testing.T) {
		id := sendFromPage(t, tabA, "/demo tool=save_note\nRemember my password")
		run(t, tabB, "card waits in tab B", waiting(id))
		run(t, tabB, "deny", clickJS(fmt.Sprintf(`#m-%s .tool-actions button.deny`, id)))
		for name, tab := range map[string]context.Context{"A": tabA, "B": tabB} {
			run(t, tab, "tab "+name+" shows the denial", poll(fmt.Sprintf(
				`document.querySelector('#m-%s .tool[data-state="denied"] .tool-output.error')?.textContent.includes("denied") &&
				 document.querySelector('#m-%s .tool-actions') === null`, id, id)))
			waitStatus(t, tab, id, "complete")
		}
		showsStored(t, tabA, n.message(t, n.devToken(t, "alice"), conv, id))
	})
}
