package llm

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/chatstream/chatstream"
)

// DefaultDemoRate is the pace of a Demo provider, in deltas per second, when
// DemoConfig.TokensPerSec is 0.
const DefaultDemoRate = 30

// DemoConfig configures a Demo provider.
type DemoConfig struct {
	// TokensPerSec is the pace of the deltas: 0 means DefaultDemoRate,
	// negative means as fast as the reader takes them.
	TokensPerSec float64
	// Tokens, if positive, is the exact number of deltas of every answer:
	// fewer cut the answer, more continue it with further paragraphs, none
	// repeated; 0 gives the answer's natural length.
	Tokens int
}

// Demo is a built-in offline model: it streams a plausible Markdown answer,
// word by word, that depends only on the last user message. The answer
// quotes the question and is canned for its topic, chosen by the keywords
// of the question (streaming, Redis, Go, resuming, WebSockets, Postgres,
// testing; a general answer for none). Past its natural length it goes on
// with further paragraphs of the topic, then of the other topics, then
// numbered notes without end, none repeated. It is the default when no API
// key is configured and drives load tests, so a stream builds its text once
// when it starts (past 8192 words, a stretch of that many at a time) and
// costs one timer and no allocation per delta. It is safe for concurrent use.
//
// A last user message whose first line is
//
//	/demo tokens=N rate=R think=T tool=NAME
//
// (every key optional) overrides, for that request, Tokens with N (0: the
// natural length) and TokensPerSec with R (0 or negative: as fast as
// possible); think=T streams T words of reasoning before the answer;
// tool=NAME calls the offered tool NAME (the built-in demo tools are clock,
// calculator and save_note, which asks for approval) before answering with
// its result. The rest of the message is the question. Invalid values are
// ignored. A positive Request.MaxTokens below the number of deltas cuts the
// answer there with finish reason "length"; otherwise it is "stop" (or
// "tool_calls" when it calls a tool).
type Demo struct {
	cfg DemoConfig
}

var _ Provider = (*Demo)(nil)

// NewDemo returns a demo provider for cfg, with defaults filled in.
func NewDemo(cfg DemoConfig) *Demo {
	if cfg.TokensPerSec == 0 {
		cfg.TokensPerSec = DefaultDemoRate
	}
	if cfg.Tokens < 0 {
		cfg.Tokens = 0
	}
	return &Demo{cfg: cfg}
}

// Name returns "demo".
func (d *Demo) Name() string { return "demo" }

// Answer returns the full text a stream for req yields at its natural
// length: the joined deltas when neither Tokens nor MaxTokens cut or extend it.
func (d *Demo) Answer(req Request) string {
	q, _ := d.params(lastUser(req.Messages))
	t := newDemoText(q)
	text, _ := t.segment(true, "", 0, 0)
	return text
}

// Stream starts a demo generation. It fails only if ctx is done.
func (d *Demo) Stream(ctx context.Context, req Request) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, p := d.params(lastUser(req.Messages))
	s := &demoStream{ctx: ctx, gen: newDemoText(q), finish: "stop"}
	prefix := ""
	if last := req.Messages[len(req.Messages)-1]; last.Role == "tool" {
		// The answer after a tool call: its result, then the answer.
		prefix = "The tool answered: **" + demoSafe(last.Content) + "**." + demoSep
	}
	n := p.tokens
	if n == 0 {
		// The natural length: the text is the natural answer.
		s.text, s.next = s.gen.segment(true, prefix, 0, 0)
		n = countWords(s.text)
	}
	s.left = n
	if req.MaxTokens > 0 && req.MaxTokens < n {
		s.left, s.finish = req.MaxTokens, "length"
	}
	if p.think > 0 && req.Messages[len(req.Messages)-1].Role != "tool" {
		s.reasoning, s.thinkLeft = demoReasoning(&s.gen), p.think
	}
	if p.tool != "" && req.Messages[len(req.Messages)-1].Role != "tool" && offered(req.Tools, p.tool) {
		// This round calls the tool; the answer comes in the next.
		s.call = &ToolCall{ID: fmt.Sprintf("call_%08x", fnv1a(q+p.tool)), Name: p.tool, Arguments: demoArguments(p.tool, q)}
		s.left, s.finish = 0, "tool_calls"
	}
	if p.tokens > 0 && s.left > 0 {
		// As many words as the deltas need, or a first stretch of them.
		s.text, s.next = s.gen.segment(true, prefix, 0, min(s.left, demoSegmentWords))
	}
	for _, m := range req.Messages {
		s.prompt += 4 + countWords(m.Content)*4/3
	}
	if p.rate > 0 {
		if every := time.Duration(float64(time.Second) / p.rate); every > 0 {
			s.ticker = time.NewTicker(every)
		}
	}
	return s, nil
}

// offered reports whether tools has one named name.
func offered(tools []Tool, name string) bool {
	for _, t := range tools {
		if t.Name == name {
			return true
		}
	}
	return false
}

// demoParams are the settings of one demo generation.
type demoParams struct {
	tokens int     // 0: natural length
	rate   float64 // deltas per second; <= 0: as fast as possible
	think  int     // words of reasoning before the answer
	tool   string  // the tool to call first; empty: none
}

// params returns the question of the last user message q and the settings
// for it, applying a leading "/demo" line.
func (d *Demo) params(q string) (string, demoParams) {
	p := demoParams{tokens: d.cfg.Tokens, rate: d.cfg.TokensPerSec}
	const prefix = "/demo"
	if !strings.HasPrefix(q, prefix) {
		return q, p
	}
	line, rest, _ := strings.Cut(q, "\n")
	if len(line) > len(prefix) && !unicode.IsSpace(rune(line[len(prefix)])) {
		return q, p // e.g. "/demonstrate"
	}
	for _, f := range strings.Fields(line[len(prefix):]) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "tokens":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				p.tokens = n
			}
		case "rate":
			if r, err := strconv.ParseFloat(v, 64); err == nil {
				p.rate = r
			}
		case "think":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				p.think = min(n, maxThink)
			}
		case "tool":
			p.tool = v
		}
	}
	return rest, p
}

// maxThink bounds the reasoning of one demo answer, in words.
const maxThink = 10000

// demoStream is the Stream of a Demo provider: reasoning words, then answer
// words (or a tool call), one delta each.
type demoStream struct {
	ctx       context.Context
	gen       demoText // composes the answer
	text      string   // the answer's text built so far, or its latest stretch
	next      int      // the continuation paragraph after text
	pos       int      // start of the next delta in text
	left      int      // answer deltas still to send
	reasoning string   // the reasoning text, repeated as needed
	rpos      int
	thinkLeft int       // reasoning deltas still to send
	call      *ToolCall // the tool call to send once the reasoning is out
	sent      int       // deltas sent
	prompt    int       // rough prompt tokens
	ticker    *time.Ticker
	finish    string
	done      bool
	closed    bool
}

// Recv returns the next delta: a word with its leading whitespace, of the
// reasoning or of the answer, or the tool call.
func (s *demoStream) Recv() (Delta, error) {
	switch {
	case s.closed:
		return Delta{}, errStreamClosed
	case s.done:
		return Delta{}, io.EOF
	}
	if err := s.ctx.Err(); err != nil {
		return Delta{}, err
	}
	if s.thinkLeft == 0 && s.left == 0 && s.call == nil {
		s.done = true
		s.stopTicker()
		return Delta{}, io.EOF
	}
	if s.ticker != nil {
		select {
		case <-s.ctx.Done():
			return Delta{}, s.ctx.Err()
		case <-s.ticker.C:
		}
	}
	s.sent++
	switch {
	case s.thinkLeft > 0:
		s.thinkLeft--
		if s.rpos >= len(s.reasoning) {
			s.rpos = 0
		}
		end := nextWord(s.reasoning, s.rpos)
		delta := s.reasoning[s.rpos:end]
		s.rpos = end
		return Delta{Reasoning: delta}, nil
	case s.left > 0:
		if s.pos >= len(s.text) {
			// Past the text built so far: build the next stretch.
			s.text, s.next = s.gen.segment(false, "", s.next, min(s.left, demoSegmentWords))
			s.pos = 0
		}
		end := nextWord(s.text, s.pos)
		delta := s.text[s.pos:end]
		s.pos = end
		s.left--
		return Delta{Text: delta}, nil
	}
	c := s.call
	s.call = nil
	return Delta{ToolCall: c}, nil
}

// Usage returns rough token counts once the stream ended.
func (s *demoStream) Usage() (chatstream.Usage, bool) {
	return chatstream.Usage{PromptTokens: s.prompt, CompletionTokens: s.sent, TotalTokens: s.prompt + s.sent}, s.done
}

// FinishReason returns "stop", "length" or "tool_calls" once the stream ended.
func (s *demoStream) FinishReason() string {
	if !s.done {
		return ""
	}
	return s.finish
}

// Close stops the stream's timer.
func (s *demoStream) Close() error {
	s.closed = true
	s.stopTicker()
	return nil
}

func (s *demoStream) stopTicker() {
	if s.ticker != nil {
		s.ticker.Stop()
	}
}

// isSpace reports whether b is ASCII white space; bytes of multi-byte UTF-8
// sequences never are, so text splits on them safely.
func isSpace(b byte) bool {
	return b == ' ' || b == '\n' || b == '\t' || b == '\r'
}

// nextWord returns the end of the delta starting at pos: white space, then
// a word.
func nextWord(s string, pos int) int {
	for pos < len(s) && isSpace(s[pos]) {
		pos++
	}
	for pos < len(s) && !isSpace(s[pos]) {
		pos++
	}
	return pos
}

// countWords returns the number of words of s.
func countWords(s string) int {
	n, in := 0, false
	for i := 0; i < len(s); i++ {
		space := isSpace(s[i])
		if !space && !in {
			n++
		}
		in = !space
	}
	return n
}
