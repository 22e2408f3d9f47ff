package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/limits"
)

// The page's versions, Edit, Regenerate, rename, delete and pages, in a
// real browser.

// shown returns the ids of the messages the page shows, in order.
func shown(t *testing.T, ctx context.Context) []string {
	t.Helper()
	return eval[[]string](t, ctx, `[...document.querySelectorAll("#messages article")].map((a) => a.dataset.id)`)
}

func TestBrowser_RegenerateAndSwitchVersions(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	first := sendFromPage(t, ctx, "/demo tokens=8 rate=0\nfirst question")
	waitStatus(t, ctx, first, "complete")
	user := shown(t, ctx)[0]

	clickEnabled(t, ctx, "regenerate", "#m-"+first+" button.regenerate",
		poll(fmt.Sprintf(`document.querySelectorAll("#messages article.assistant").length === 1 && !document.getElementById("m-%s")`, first)))
	second := eval[string](t, ctx, `document.querySelector("#messages article.assistant").dataset.id`)
	waitStatus(t, ctx, second, "complete")
	run(t, ctx, "versions 2/2", poll(fmt.Sprintf(`document.querySelector("#m-%s .version")?.textContent === "2/2"`, second)))
	if got := shown(t, ctx); !slices.Equal(got, []string{user, second}) {
		t.Fatalf("after regenerate the page shows %v", got)
	}

	// Back to the first answer: ‹ 1/2 ›, the old branch.
	clickEnabled(t, ctx, "previous version", "#m-"+second+" button.prev",
		poll(fmt.Sprintf(`document.querySelector("#m-%s .version")?.textContent === "1/2"`, first)))
	if got := shown(t, ctx); !slices.Equal(got, []string{user, first}) {
		t.Fatalf("after switching back the page shows %v", got)
	}
	tok := n.devToken(t, "alice")
	conv := convID(t, ctx)
	showsStored(t, ctx, n.message(t, tok, conv, first))
	// The switch is the conversation's: a reload shows the same branch.
	run(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#m-"+first)))
	if got := shown(t, ctx); !slices.Equal(got, []string{user, first}) {
		t.Fatalf("after a reload the page shows %v", got)
	}
	// And forward again.
	clickEnabled(t, ctx, "next version", "#m-"+first+" button.next",
		poll(fmt.Sprintf(`document.querySelector("#m-%s .version")?.textContent === "2/2"`, second)))
}

func TestBrowser_EditAQuestion(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	first := sendFromPage(t, ctx, "/demo tokens=8 rate=0\noriginal question")
	waitStatus(t, ctx, first, "complete")
	user := shown(t, ctx)[0]

	run(t, ctx, "edit", clickJS("#m-"+user+" button.edit"),
		chromedp.WaitVisible(chromedp.CSS("#m-"+user+" textarea")))
	eval[any](t, ctx, `document.querySelector("#m-`+user+` textarea").value = "", null`)
	run(t, ctx, "type the new question",
		chromedp.SendKeys(chromedp.CSS("#m-"+user+" textarea"), "the edited question"+kb.Enter),
		poll(fmt.Sprintf(`!document.getElementById("m-%s") && document.querySelectorAll("#messages article").length === 2`, user)))
	ids := shown(t, ctx)
	edited, answer := ids[0], ids[1]
	waitStatus(t, ctx, answer, "complete")
	if got := pageText(t, ctx, edited); got != "the edited question" {
		t.Fatalf("the edited question shows %q", got)
	}
	run(t, ctx, "versions 2/2", poll(fmt.Sprintf(`document.querySelector("#m-%s .version")?.textContent === "2/2"`, edited)))
	tok := n.devToken(t, "alice")
	conv := convID(t, ctx)
	if got := n.branchIDs(t, tok, conv); !slices.Equal(got, []string{edited, answer}) {
		t.Fatalf("stored branch %v, the page shows %v", got, ids)
	}
	showsStored(t, ctx, n.message(t, tok, conv, answer))

	// Escape leaves a question as it was.
	run(t, ctx, "edit and cancel", clickJS("#m-"+edited+" button.edit"),
		chromedp.WaitVisible(chromedp.CSS("#m-"+edited+" textarea")),
		chromedp.SendKeys(chromedp.CSS("#m-"+edited+" textarea"), " more"+kb.Escape),
		poll(fmt.Sprintf(`!document.querySelector("#m-%s textarea")`, edited)))
	if got := pageText(t, ctx, edited); got != "the edited question" {
		t.Fatalf("after Escape the question shows %q", got)
	}
	// The original is one click away.
	clickEnabled(t, ctx, "previous version", "#m-"+edited+" button.prev",
		poll(fmt.Sprintf(`document.querySelector("#m-%s .version")?.textContent === "1/2"`, user)))
	if got := shown(t, ctx); !slices.Equal(got, []string{user, first}) {
		t.Fatalf("the first version shows %v", got)
	}
}

func TestBrowser_RenameAndDeleteAcrossTabs(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	tabA := newBrowser(t)
	signIn(t, tabA, n, "alice")
	first := sendFromPage(t, tabA, "/demo tokens=5 rate=0\nname me")
	waitStatus(t, tabA, first, "complete")
	conv := convID(t, tabA)
	tabB := newTab(t, tabA)
	openSignedIn(t, tabB, n, conv, first)
	entry := fmt.Sprintf(`#conversations li[data-id=%q]`, conv)

	run(t, tabA, "rename", clickJS(entry+" button.rename"),
		chromedp.WaitVisible(chromedp.CSS(entry+" .rename-input")))
	eval[any](t, tabA, `document.querySelector(".rename-input").value = "", null`)
	run(t, tabA, "type the title", chromedp.SendKeys(chromedp.CSS(entry+" .rename-input"), "Renamed chat"+kb.Enter),
		poll(`document.getElementById("title").textContent === "Renamed chat"`),
		poll(fmt.Sprintf(`document.querySelector(%q)?.textContent === "Renamed chat"`, entry+" button.open")))
	run(t, tabB, "tab B sees the new title", poll(`document.getElementById("title").textContent === "Renamed chat"`),
		poll(fmt.Sprintf(`document.querySelector(%q)?.textContent === "Renamed chat"`, entry+" button.open")))

	// Delete asks first; Cancel keeps it.
	run(t, tabA, "delete, cancel", clickJS(entry+" button.delete"),
		chromedp.WaitVisible(chromedp.CSS(entry+" button.confirm-delete")),
		clickJS(entry+" button.cancel-delete"),
		chromedp.WaitVisible(chromedp.CSS(entry+" button.open")))
	if code := n.call(t, "GET", "/v1/conversations/"+conv, n.devToken(t, "alice"), nil, nil); code != 200 {
		t.Fatalf("a cancelled delete deleted: %d", code)
	}
	run(t, tabA, "delete", clickJS(entry+" button.delete"),
		chromedp.WaitVisible(chromedp.CSS(entry+" button.confirm-delete")),
		clickJS(entry+" button.confirm-delete"),
		poll(fmt.Sprintf(`!document.querySelector(%q) && !!document.querySelector("#messages .empty")`, entry)))
	// Tab B leaves the conversation.
	run(t, tabB, "tab B leaves", poll(fmt.Sprintf(`!document.querySelector(%q) && !!document.querySelector("#messages .empty") && location.hash.length <= 1`, entry)))
	if code := n.call(t, "GET", "/v1/conversations/"+conv, n.devToken(t, "alice"), nil, nil); code != 404 {
		t.Fatalf("GET after delete: %d", code)
	}
}

func TestBrowser_PagesLoadAsTheUserScrolls(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Limits: limits.Off()}) // many sends and conversations of one user
	tok := n.devToken(t, "alice")
	for range 45 {
		n.conversation(t, tok)
	}
	// The newest conversation has 102 messages: the page gets 100 first.
	conv := n.conversation(t, tok)
	var firstQuestion string
	for i := range 51 {
		s := n.send(t, tok, conv, fmt.Sprintf("/demo tokens=1 rate=0\nquestion %d", i))
		if i == 0 {
			firstQuestion = s.UserMessage.ID
		}
		n.final(t, tok, conv, s.StreamID)
	}
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	run(t, ctx, "the newest 100", poll(`document.querySelectorAll("#messages article").length === 100`))
	if eval[bool](t, ctx, `!!document.getElementById("m-`+firstQuestion+`")`) {
		t.Fatal("the oldest message shows before scrolling")
	}
	eval[any](t, ctx, `document.getElementById("messages").scrollTop = 0, null`)
	run(t, ctx, "scroll up", poll(`document.querySelectorAll("#messages article").length === 102`))
	if got := shown(t, ctx)[0]; got != firstQuestion {
		t.Fatalf("the first message shown is %s, want %s", got, firstQuestion)
	}

	// The list: a page or two fill the sidebar, the rest come on scrolling.
	count := `document.querySelectorAll("#conversations li[data-id]").length`
	run(t, ctx, "the first pages", poll(count+` >= 20`))
	if got := eval[int](t, ctx, count); got >= 46 {
		t.Fatalf("all %d conversations listed before scrolling", got)
	}
	// Scrolled to the end, again as each page lands, like a user would.
	run(t, ctx, "scroll the list", poll(`(() => { const nav = document.querySelector(".sidebar nav"); nav.scrollTop = nav.scrollHeight; })(), `+count+` === 46`))
}

// A send whose answer the connection lost is sent again once the socket is
// back, with the same client_message_id: one question, one answer.
func TestBrowser_SendRetriedAfterALostAnswer(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	ctx := newBrowser(t)
	signIn(t, ctx, n, "alice")
	first := sendFromPage(t, ctx, "/demo tokens=5 rate=0\nfirst")
	waitStatus(t, ctx, first, "complete")
	eval[any](t, ctx, `window.chatstream.dropAfterNextFrame(), null`)
	second := sendFromPage(t, ctx, "/demo tokens=5 rate=0\nsent once")
	waitStatus(t, ctx, second, "complete")
	tok := n.devToken(t, "alice")
	conv := convID(t, ctx)
	stored := n.messages(t, tok, conv)
	if len(stored) != 4 || stored[2].ClientMsgID == "" || stored[0].ClientMsgID == "" {
		t.Fatalf("stored %+v, want two questions with client ids and their answers", stored)
	}
	if got := shown(t, ctx); len(got) != 4 || got[3] != stored[3].ID {
		t.Fatalf("the page shows %v, stored %v", got, n.branchIDs(t, tok, conv))
	}
	showsStored(t, ctx, stored[3])
}
