package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// AskConfig is one question to a running server.
type AskConfig struct {
	BaseURL  string
	Secret   []byte // signs the token; empty uses the dev-token endpoint
	User     string
	Question string
	// Answer receives the answer as it streams: its text, its reasoning
	// (dimmed when Color), its tool calls and their results.
	Answer io.Writer
	Color  bool
	// Approve answers a tool call that waits for the user's approval; nil
	// denies every one.
	Approve func(name, arguments string) bool
	// Timeout bounds the whole exchange. Default 2 minutes.
	Timeout time.Duration
}

// AskResult is what a person checking a deployment wants to know.
type AskResult struct {
	Ready      map[string]string `json:"ready"` // dependency → "ok" or the problem
	StreamID   string            `json:"stream_id"`
	Status     string            `json:"status"`
	Error      string            `json:"error,omitempty"`
	TTFB       time.Duration     `json:"ttfb_ns"`
	Total      time.Duration     `json:"total_ns"`
	Chunks     int               `json:"chunks"`
	Characters int               `json:"characters"`
	AvgGap     time.Duration     `json:"avg_gap_ns"`
	MaxGap     time.Duration     `json:"max_gap_ns"`
	// Reasoning counts the characters of the model's reasoning; ToolCalls
	// the tool calls it made.
	Reasoning    int               `json:"reasoning_characters"`
	ToolCalls    int               `json:"tool_calls"`
	FinishReason string            `json:"finish_reason,omitempty"`
	Usage        *chatstream.Usage `json:"usage,omitempty"`
}

// Print writes the result for a person.
func (a *AskResult) Print(w io.Writer) {
	fmt.Fprintln(w)
	for _, dep := range []string{"server", "redis", "postgres"} {
		if v, ok := a.Ready[dep]; ok {
			fmt.Fprintf(w, "%-10s %s\n", dep, v)
		}
	}
	fmt.Fprintf(w, "%-10s %s %s\n", "status", a.Status, a.Error)
	fmt.Fprintf(w, "%-10s %s\n", "ttfb", a.TTFB.Round(time.Microsecond))
	fmt.Fprintf(w, "%-10s %d\n", "chunks", a.Chunks)
	fmt.Fprintf(w, "%-10s %d\n", "characters", a.Characters)
	if a.Reasoning > 0 {
		fmt.Fprintf(w, "%-10s %d characters\n", "reasoning", a.Reasoning)
	}
	if a.ToolCalls > 0 {
		fmt.Fprintf(w, "%-10s %d\n", "tool calls", a.ToolCalls)
	}
	if a.FinishReason != "" {
		fmt.Fprintf(w, "%-10s %s\n", "finish", a.FinishReason)
	}
	if u := a.Usage; u != nil {
		fmt.Fprintf(w, "%-10s %d tokens (%d prompt, %d completion)\n", "usage", u.TotalTokens, u.PromptTokens, u.CompletionTokens)
	}
	fmt.Fprintf(w, "%-10s %s\n", "total", a.Total.Round(time.Millisecond))
	fmt.Fprintf(w, "%-10s avg %s, max %s\n", "gaps", a.AvgGap.Round(time.Microsecond), a.MaxGap.Round(time.Microsecond))
}

// Ask checks that the server is ready, asks one question and streams the
// answer to cfg.Answer.
func Ask(ctx context.Context, cfg AskConfig) (*AskResult, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.User == "" {
		cfg.User = "ask"
	}
	if cfg.Answer == nil {
		cfg.Answer = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	d, err := newDialer(cfg.BaseURL, false)
	if err != nil {
		return nil, err
	}
	r := &run{cfg: Config{BaseURL: cfg.BaseURL, Secret: cfg.Secret}, dial: d, http: &http.Client{Timeout: 30 * time.Second}}
	res := &AskResult{Ready: map[string]string{}}
	if err := r.ready(ctx, res); err != nil {
		return res, err
	}
	tok, err := r.token(ctx, cfg.User)
	if err != nil {
		return res, err
	}
	var conv struct{ ID string }
	if err := r.call(ctx, "POST", "/v1/conversations", tok, map[string]string{"title": truncateTitle(cfg.Question)}, &conv); err != nil {
		return res, err
	}
	conn, err := d.dial(ctx, tok)
	if err != nil {
		return res, fmt.Errorf("open websocket: %w", err)
	}
	defer conn.CloseNow()
	start := time.Now()
	if err := writeJSON(ctx, conn, map[string]any{"type": "send", "conversation_id": conv.ID, "content": cfg.Question}); err != nil {
		return res, err
	}
	var last time.Time
	var gaps time.Duration
	pr := &partPrinter{w: cfg.Answer, color: cfg.Color}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return res, fmt.Errorf("read: %w", err)
		}
		now := time.Now()
		var f struct {
			protocol.Chunk
			Type         string `json:"type"`
			Status       string `json:"status"`
			Code         string `json:"code"`
			Message      string `json:"message"`
			Error        *struct{ Code, Message string }
			FinishReason string            `json:"finish_reason"`
			Usage        *chatstream.Usage `json:"usage"`
			Parts        []chatstream.Part `json:"parts"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return res, fmt.Errorf("server sent a frame that is not JSON: %w", err)
		}
		switch f.Type {
		case "accepted":
			res.StreamID = f.StreamID
		case "chunk":
			if f.StreamID != res.StreamID {
				continue
			}
			if res.Chunks == 0 {
				res.TTFB = now.Sub(start)
			} else {
				gap := now.Sub(last)
				gaps += gap
				res.MaxGap = max(res.MaxGap, gap)
			}
			last = now
			res.Chunks++
			res.Characters += len([]rune(f.Content))
			p := f.Chunk.Part()
			if p.Type == chatstream.PartReasoning {
				res.Reasoning += len([]rune(p.Text))
			}
			if p.Type == chatstream.PartToolCall {
				res.ToolCalls++
			}
			pr.part(p)
			if p.Type == chatstream.PartToolCall && p.RequiresApproval {
				approved := cfg.Approve != nil && cfg.Approve(p.Name, p.Arguments)
				if err := writeJSON(ctx, conn, map[string]any{"type": "approve", "stream_id": res.StreamID, "call_id": p.CallID, "approved": approved}); err != nil {
					return res, err
				}
			}
		case "snapshot":
			pr.text("\n[snapshot]\n")
			if len(f.Parts) == 0 {
				pr.text(f.Content)
			}
			for _, p := range f.Parts {
				pr.part(p)
			}
		case "done":
			if f.StreamID != res.StreamID {
				continue
			}
			res.Total = now.Sub(start)
			res.Status, res.FinishReason, res.Usage = f.Status, f.FinishReason, f.Usage
			if f.Error != nil {
				res.Error = f.Error.Code + ": " + f.Error.Message
			}
			if res.Chunks > 1 {
				res.AvgGap = gaps / time.Duration(res.Chunks-1)
			}
			pr.text("\n")
			if f.Status != "complete" {
				return res, fmt.Errorf("the answer ended %s %s", f.Status, res.Error)
			}
			return res, nil
		case "error":
			return res, fmt.Errorf("server: %s: %s", f.Code, f.Message)
		}
	}
}

// ready asks /readyz which dependencies answer.
func (r *run) ready(ctx context.Context, res *AskResult) error {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(r.cfg.BaseURL, "/")+"/readyz", nil)
	if err != nil {
		return err
	}
	hres, err := r.http.Do(req)
	if err != nil {
		res.Ready["server"] = "unreachable: " + err.Error()
		return fmt.Errorf("server unreachable: %w", err)
	}
	defer hres.Body.Close()
	res.Ready["server"] = "ok"
	if hres.StatusCode == http.StatusOK {
		res.Ready["redis"], res.Ready["postgres"] = "ok", "ok"
		return nil
	}
	var body struct {
		Error struct {
			Dependencies map[string]string `json:"dependencies"`
		} `json:"error"`
	}
	_ = json.NewDecoder(hres.Body).Decode(&body)
	res.Ready["redis"], res.Ready["postgres"] = "ok", "ok"
	for dep, v := range body.Error.Dependencies {
		res.Ready[dep] = v
	}
	return errors.New("server not ready: a dependency does not answer")
}

func truncateTitle(q string) string {
	q = strings.TrimSpace(strings.SplitN(q, "\n", 2)[0])
	if r := []rune(q); len(r) > 60 {
		return string(r[:60])
	}
	return q
}

// partPrinter writes an answer's parts for a person: text as it comes,
// reasoning dimmed (with color), each tool call, answer and result on a
// line of its own.
type partPrinter struct {
	w     io.Writer
	color bool
	last  chatstream.PartType
}

const (
	dim   = "\x1b[2m"
	reset = "\x1b[0m"
)

func (p *partPrinter) text(s string) {
	p.style("")
	fmt.Fprint(p.w, s)
}

// style switches from the style of the last part to that of typ.
func (p *partPrinter) style(typ chatstream.PartType) {
	if p.last == typ {
		return
	}
	if p.last == chatstream.PartReasoning {
		if p.color {
			fmt.Fprint(p.w, reset)
		}
		fmt.Fprintln(p.w)
	}
	if typ == chatstream.PartReasoning {
		if p.color {
			fmt.Fprint(p.w, dim)
		}
		fmt.Fprint(p.w, "thinking: ")
	}
	p.last = typ
}

func (p *partPrinter) part(part chatstream.Part) {
	switch part.Type {
	case chatstream.PartText:
		p.text(part.Text)
		return
	case chatstream.PartReasoning:
		p.style(chatstream.PartReasoning)
		fmt.Fprint(p.w, part.Text)
		return
	}
	p.style(part.Type)
	switch part.Type {
	case chatstream.PartToolCall:
		wait := ""
		if part.RequiresApproval {
			wait = " (asks for approval)"
		}
		fmt.Fprintf(p.w, "\n[tool call] %s %s%s\n", part.Name, part.Arguments, wait)
	case chatstream.PartToolApproval:
		answer := "approved"
		if !part.Approved {
			answer = "not approved (" + part.Reason + ")"
		}
		fmt.Fprintf(p.w, "[approval] %s\n", answer)
	case chatstream.PartToolResult:
		label := "result"
		if part.IsError {
			label = "error"
		}
		fmt.Fprintf(p.w, "[%s] %s\n", label, part.Output)
	}
}
