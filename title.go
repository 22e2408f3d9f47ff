package chatstream

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// TitleMaxRunes is the longest title TitleOf makes, ellipsis included.
const TitleMaxRunes = 60

// TitleOf is the title a conversation takes from its first message: the
// first sentence of the question, without the demo model's leading
// "/demo key=value …" settings, cut at a word boundary to TitleMaxRunes
// with an ellipsis. It is "" when nothing of the question is left (the page
// then shows "New chat"). The page's titleOf (frontend/static/app.js)
// follows the same rules.
func TitleOf(content string) string {
	text := strings.TrimSpace(content)
	if rest, ok := strings.CutPrefix(text, "/demo"); ok && (rest == "" || unicode.IsSpace(rune(rest[0]))) {
		// The settings are the directive's key=value words; a question may
		// follow them on the same line or start on the next.
		line, after, _ := strings.Cut(rest, "\n")
		words := strings.Fields(line)
		for len(words) > 0 && strings.Contains(words[0], "=") {
			words = words[1:]
		}
		text = strings.TrimSpace(strings.Join(words, " ") + "\n" + after)
	}
	// The first sentence: up to a line break, or a . ! ? followed by a space.
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	}
	for i, r := range text {
		if (r == '.' || r == '!' || r == '?') && i+1 < len(text) && text[i+1] == ' ' {
			text = text[:i+1]
			break
		}
	}
	text = strings.Join(strings.Fields(text), " ")
	if utf8.RuneCountInString(text) <= TitleMaxRunes {
		return text
	}
	r := []rune(text)[:TitleMaxRunes-1]
	if cut := strings.LastIndexByte(string(r), ' '); cut > TitleMaxRunes/2 {
		return strings.TrimRight(string(r)[:cut], " ,;:") + "…"
	}
	return string(r) + "…"
}
