package llm

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// demoSegmentWords bounds the words of demo text built at once. An answer
// up to this long is built whole when its stream starts; a longer one (a
// load test's tokens=1000000) a stretch at a time as it streams, so a
// stream holds about 60 KB of text however long it is, at the cost of one
// allocation per this many deltas.
const demoSegmentWords = 8192

// demoText composes the text of a demo answer to one question: the question
// quoted, the natural answer of its topic, then, for a longer answer, as
// many further paragraphs as asked, none repeated: the topic's own, the
// other topics' ("A related point on …") and numbered notes without end.
type demoText struct {
	quote   string // the question, safe to quote; empty: nothing to quote
	topic   string // a few words of the question, for {topic}
	subject int    // the topic, an index in demoSubjects
	second  int    // the second best matching topic; -1: none
}

// newDemoText returns the text of the answer to question.
func newDemoText(question string) demoText {
	t := demoText{quote: demoQuote(question), topic: demoTopic(question)}
	t.subject, t.second = demoMatch(question)
	return t
}

// segment returns a stretch of the text and the index of the continuation
// paragraph after it. With head the stretch starts with prefix and the
// natural answer; then come the continuation paragraphs from from on, until
// the stretch holds at least words words. The builder is sized by a first
// pass that only measures.
func (t *demoText) segment(head bool, prefix string, from, words int) (string, int) {
	var m demoWriter
	to := t.write(&m, head, prefix, from, -1, words)
	var b strings.Builder
	b.Grow(m.bytes)
	t.write(&demoWriter{b: &b}, head, prefix, from, to, 0)
	return b.String(), to
}

// write writes a stretch of the text to w (see segment), the continuation
// paragraphs up to to or, if to is negative, until w counted words words,
// and returns the index of the paragraph after the last it wrote.
func (t *demoText) write(w *demoWriter, head bool, prefix string, from, to, words int) int {
	if head {
		w.str(prefix)
		t.natural(w)
	}
	i := from
	for ; to < 0 && w.words < words || i < to; i++ {
		t.paragraph(w, i)
	}
	return i
}

// natural writes the answer at its natural length: the quoted question,
// the topic's answer and a word on the second topic.
func (t *demoText) natural(w *demoWriter) {
	if t.quote == "" {
		w.str("There were no words I could quote, so here is a general answer.")
	} else {
		w.str("You asked: “")
		w.str(t.quote)
		w.str("”")
	}
	w.str(demoSep)
	w.fill(demoSubjects[t.subject].answer, t)
	if t.second >= 0 {
		s := &demoSubjects[t.second]
		w.str(demoSep + "**Also on ")
		w.str(s.name)
		w.str(":** ")
		w.str(s.brief)
	}
}

// paragraph writes continuation paragraph i, after demoSep: a heading, then
// the topic's further paragraphs; a heading, then the other topics'
// paragraphs (the second topic's first); a heading, then numbered notes.
func (t *demoText) paragraph(w *demoWriter, i int) {
	s := &demoSubjects[t.subject]
	w.str(demoSep)
	if i == 0 {
		w.str("### More on ")
		w.str(s.name)
		return
	}
	if i--; i < len(s.more) {
		w.str(s.more[i])
		return
	}
	if i -= len(s.more); i == 0 {
		w.str("### Related points")
		return
	}
	i--
	for r := 0; ; r++ {
		j := t.related(r)
		if j < 0 {
			break
		}
		o := &demoSubjects[j]
		if i < len(o.more) {
			w.str("**A related point on ")
			w.str(o.name)
			w.str(".** ")
			w.str(o.more[i])
			return
		}
		i -= len(o.more)
	}
	if i == 0 {
		w.str("### Notes")
		return
	}
	t.note(w, i)
}

// related returns the r-th of the other named topics, the second topic
// first, or -1 past the last.
func (t *demoText) related(r int) int {
	if t.second >= 0 {
		if r == 0 {
			return t.second
		}
		r--
	}
	for j := range demoFallback {
		if j == t.subject || j == t.second {
			continue
		}
		if r == 0 {
			return j
		}
		r--
	}
	return -1
}

// note writes numbered note k (k >= 1), its sentences picked by k.
func (t *demoText) note(w *demoWriter, k int) {
	w.str("**Note ")
	w.num(k)
	w.str(" on ")
	w.str(demoSubjects[t.subject].name)
	w.str(".** ")
	w.fill(demoNoteOpen[k%len(demoNoteOpen)], t)
	w.str(" ")
	w.fill(demoNoteMiddle[k%len(demoNoteMiddle)], t)
	w.str(" ")
	w.fill(demoNoteClose[k%len(demoNoteClose)], t)
}

// demoWriter writes text to b or, when b is nil, only measures it.
type demoWriter struct {
	b      *strings.Builder
	bytes  int  // measured bytes
	words  int  // measured words
	inWord bool // the last byte measured was part of a word
}

// str writes s.
func (w *demoWriter) str(s string) {
	if w.b != nil {
		w.b.WriteString(s)
		return
	}
	w.bytes += len(s)
	for i := 0; i < len(s); i++ {
		space := isSpace(s[i])
		if !space && !w.inWord {
			w.words++
		}
		w.inWord = !space
	}
}

// num writes n in decimal, without allocating.
func (w *demoWriter) num(n int) {
	var buf [20]byte
	b := strconv.AppendInt(buf[:0], int64(n), 10)
	if w.b != nil {
		w.b.Write(b)
		return
	}
	w.bytes += len(b)
	if !w.inWord {
		w.words++
	}
	w.inWord = true
}

// fill writes s with {topic} and {name} replaced by the question's words
// and the topic's name.
func (w *demoWriter) fill(s string, t *demoText) {
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			w.str(s)
			return
		}
		w.str(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "{topic}"):
			w.str(t.topic)
			s = s[len("{topic}"):]
		case strings.HasPrefix(s, "{name}"):
			w.str(demoSubjects[t.subject].name)
			s = s[len("{name}"):]
		default:
			w.str(s[:1])
			s = s[1:]
		}
	}
}

// demoMatch returns the topic of question, the one with the most keyword
// hits (ties go to the first listed; no hit: demoFallback), and the second
// best matching topic, or -1.
func demoMatch(question string) (best, second int) {
	words := strings.FieldsFunc(strings.ToLower(question), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	var hits [len(demoSubjects)]int
	for i := range words {
		for j := range demoSubjects {
			for _, k := range demoSubjects[j].keywords {
				if keywordAt(words, i, k) {
					hits[j]++
				}
			}
		}
	}
	best, second = demoFallback, -1
	for j, h := range hits {
		switch {
		case h == 0:
		case best == demoFallback || h > hits[best]:
			best, second = j, best
		case second < 0 || second == demoFallback || h > hits[second]:
			second = j
		}
	}
	if second == demoFallback {
		second = -1
	}
	return best, second
}

// keywordAt reports whether keyword kw, whose words are separated by '-',
// '/' or ' ', starts at words[i].
func keywordAt(words []string, i int, kw string) bool {
	for kw != "" {
		part, rest := kw, ""
		if k := strings.IndexAny(kw, "-/ "); k >= 0 {
			part, rest = kw[:k], kw[k+1:]
		}
		if i >= len(words) || words[i] != part {
			return false
		}
		i++
		kw = rest
	}
	return true
}

// demoQuote returns question as the answer quotes it: on one line, without
// the characters that would open code, emphasis, links or HTML, white space
// collapsed, and cut at a word with an ellipsis past about 80 bytes.
func demoQuote(question string) string {
	const maxBytes = 80
	var b strings.Builder
	space := false
	for _, r := range question {
		switch {
		case strings.ContainsRune("`*_~[]<>\\", r):
			continue
		case unicode.IsSpace(r) || unicode.IsControl(r):
			space = b.Len() > 0
			continue
		}
		if b.Len() > maxBytes {
			break // long enough to know it is cut
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	s := b.String()
	if len(s) <= maxBytes {
		return s
	}
	cut := strings.LastIndexByte(s[:maxBytes+1], ' ')
	if cut < maxBytes/2 {
		// One long word: cut inside it, between two characters.
		for cut = maxBytes; !utf8.RuneStart(s[cut]); cut-- {
		}
	}
	return strings.TrimRight(s[:cut], " ,;:.-") + "…"
}
