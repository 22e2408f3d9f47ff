package chatstream_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatstream/chatstream"
)

func TestTitleOf(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"How do I resume a dropped stream?", "How do I resume a dropped stream?"},
		{"/demo tokens=200 rate=25\nHow do I resume a dropped stream? It stopped.", "How do I resume a dropped stream?"},
		{"/demo tokens=200 rate=25 How does Redis pub/sub work", "How does Redis pub/sub work"},
		{"/demo think=40", ""},
		{"/demo", ""},
		{"/demonstrate the idea", "/demonstrate the idea"},
		{"  First line\nsecond line", "First line"},
		{"Version 1.5 is out. What changed?", "Version 1.5 is out."},
		{"Hello!  How   are you?", "Hello!"},
		{strings.Repeat("word ", 30), strings.Repeat("word ", 10) + "word…"},
		{strings.Repeat("x", 100), strings.Repeat("x", 59) + "…"},
		{strings.Repeat("é", 100), strings.Repeat("é", 59) + "…"},
	} {
		got := chatstream.TitleOf(c.in)
		if got != c.want {
			t.Errorf("TitleOf(%q) = %q, want %q", c.in, got, c.want)
		}
		if n := utf8.RuneCountInString(got); n > chatstream.TitleMaxRunes {
			t.Errorf("TitleOf(%q) has %d runes", c.in, n)
		}
	}
}
