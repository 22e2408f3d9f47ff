package llm

import (
	"encoding/json"
	"strings"
	"unicode"
)

// demoSep starts every demo text; it is skipped on the first pass and
// separates the repetitions of an answer stretched by a token count.
const demoSep = "\n\n"

// demoTopicMarker is replaced by a few words of the question.
const demoTopicMarker = "{topic}"

// fence opens and closes Markdown code blocks (raw strings cannot hold it).
const fence = "```"

// demoTemplates are the canned answers; the question's hash picks one.
var demoTemplates = [...]string{
	`## A quick take on {topic}

Here is how I would approach **{topic}**, step by step:

1. Start with the smallest version that works, and measure it.
2. Keep each part focused: one function, one responsibility.
3. Write a test before you optimise anything.
4. Add caching, concurrency or configuration only when the numbers ask for it.

A minimal example in Go:

` + fence + `go
func main() {
	items := []string{"alpha", "beta", "gamma"}
	for i, item := range items {
		fmt.Printf("%d: %s\n", i, item)
	}
}
` + fence + `

**In short:** begin small, verify every step, and grow the solution gradually. If you share more about your setup, I can give a more specific answer.`,

	`**Good question!** When people ask about {topic}, the answer usually comes down to three things:

- **Clarity:** name things for what they do, not how they do it.
- **Feedback:** run the code early and often, ideally with automated tests.
- **Simplicity:** prefer the boring solution until it clearly stops working.

Here is a small Python sketch that shows the idea:

` + fence + `python
def summarize(values):
    total = sum(values)
    return {"count": len(values), "total": total, "mean": total / max(len(values), 1)}

print(summarize([3, 5, 8, 13]))
` + fence + `

Try it with your own data and adjust the details to your case. Let me know which part of {topic} you would like to explore next.`,

	`### Getting started with {topic}

There is no single right way to do this, but the following steps work well in practice:

1. Read the official documentation once, end to end.
2. Reproduce the simplest example on your own machine.
3. Change one thing at a time and watch what happens.
4. Write down what surprised you; that is where the real learning is.

For example, from a terminal:

` + fence + `sh
mkdir demo && cd demo
git init
echo "# notes" > README.md
git add README.md && git commit -m "first step"
` + fence + `

**Tip:** keep your experiments in version control so you can always go back. Once the basics of {topic} feel familiar, move on to a real project.`,

	`## Understanding {topic}

At its core, this is about **trade-offs**. A few points are worth keeping in mind:

- Every choice has a cost in time, memory or complexity.
- Measure before and after a change; intuition is often wrong.
- Document the decision, so the next person knows why.

A small configuration example makes it concrete:

` + fence + `json
{
  "name": "example",
  "retries": 3,
  "timeout_seconds": 30,
  "features": ["cache", "metrics"]
}
` + fence + `

**Bottom line:** start with sensible defaults like these, observe how the system behaves, and tune one setting at a time. Feel free to ask a follow-up question about {topic}.`,
}

// demoAnswer returns demoSep and the answer to question.
func demoAnswer(question string) string {
	t := demoTemplates[fnv1a(question)%uint32(len(demoTemplates))]
	topic := demoTopic(question)
	var b strings.Builder
	b.Grow(len(demoSep) + len(t) + 3*len(topic))
	b.WriteString(demoSep)
	for {
		before, after, found := strings.Cut(t, demoTopicMarker)
		b.WriteString(before)
		if !found {
			break
		}
		b.WriteString(topic)
		t = after
	}
	return b.String()
}

// demoTopic returns the first few words of question, stripped of anything
// but letters, digits, hyphens and apostrophes so that they cannot break the
// Markdown around them, or "your question" if none remain.
func demoTopic(question string) string {
	const maxWords, maxBytes = 6, 60
	var b strings.Builder
	keep := func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '\'' {
			return r
		}
		return -1
	}
	for pos, words := 0, 0; pos < len(question) && words < maxWords; {
		end := nextWord(question, pos)
		w := strings.Map(keep, question[pos:end])
		pos = end
		if w == "" {
			continue
		}
		if b.Len()+1+len(w) > maxBytes {
			break
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		words++
	}
	if b.Len() == 0 {
		return "your question"
	}
	return b.String()
}

// fnv1a is the 32-bit FNV-1a hash of s.
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// demoReasoning is what the demo "thinks" about question before answering.
func demoReasoning(question string) string {
	topic := demoTopic(question)
	return " The user asks about " + topic + ". I should answer with the essentials first, then an example." +
		" Which parts matter most for " + topic + "? Probably the simplest working version, and how to check it." +
		" I will keep the answer short and concrete."
}

// demoArguments are the arguments the demo model calls a tool with.
func demoArguments(tool, question string) string {
	switch tool {
	case "calculator":
		expr := ""
		for _, r := range question {
			if strings.ContainsRune("0123456789+-*/(). ", r) {
				expr += string(r)
			}
		}
		if strings.TrimSpace(expr) == "" || !strings.ContainsAny(expr, "0123456789") {
			expr = "6 * 7"
		}
		b, _ := json.Marshal(map[string]string{"expression": strings.TrimSpace(expr)})
		return string(b)
	case "clock":
		return `{"timezone":"UTC"}`
	}
	b, _ := json.Marshal(map[string]string{"text": demoTopic(question)})
	return string(b)
}

// demoSafe is s without the characters that would break the Markdown
// around it, at most 200 bytes.
func demoSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '*' || r == '`' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.TrimSpace(s)
}
