package worker

import (
	"context"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
)

// prompt returns the messages of the next model call: the system prompt
// and the conversation before this answer (read once), then the answer so
// far — its text, tool calls and their results.
func (g *generation) prompt(ctx context.Context) ([]llm.Message, error) {
	if !g.historyRead {
		hist, err := g.readHistory(ctx)
		if err != nil {
			return nil, err
		}
		g.history = buildPrompt(g.pool.cfg.SystemPrompt, hist, g.pool.cfg.HistoryBytes)
		g.historyRead = true
	}
	own := partsToMessages(g.parts.Parts())
	msgs := make([]llm.Message, 0, len(g.history)+len(own))
	return append(append(msgs, g.history...), own...), nil
}

// readHistory reads the messages before this answer. The job is queued
// inside the transaction that writes its message, so a worker can be
// faster than the commit: a missing message is waited for a moment, then
// the job ends (its transaction did not commit).
func (g *generation) readHistory(ctx context.Context) ([]*chatstream.Message, error) {
	p := g.pool
	wait := time.Now().Add(p.cfg.CommitWait)
	for {
		var hist []*chatstream.Message
		err := retry(ctx, "read history", g.logger, func(ctx context.Context) (err error) {
			hist, err = p.store.History(ctx, g.job.ConversationID, g.job.StreamID, p.cfg.HistoryMessages)
			return err
		})
		if chatstream.ErrorCode(err) == chatstream.ENOTFOUND && time.Now().Before(wait) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		return hist, err
	}
}

// buildPrompt turns the conversation's earlier messages into the prompt:
// the system prompt, then the newest messages that fit in budget bytes
// (the last one always), oldest first. An assistant message goes as the
// provider takes it: its text, its tool calls and their results (see
// partsToMessages). Empty messages are left out.
func buildPrompt(system string, hist []*chatstream.Message, budget int) []llm.Message {
	var picked [][]llm.Message // newest first
	used := 0
	for i := len(hist) - 1; i >= 0; i-- {
		m := hist[i]
		var msgs []llm.Message
		switch m.Role {
		case chatstream.RoleUser:
			if m.Content != "" {
				msgs = []llm.Message{{Role: string(m.Role), Content: m.Content}}
			}
		case chatstream.RoleAssistant:
			msgs = partsToMessages(m.PartsOrText())
		}
		if len(msgs) == 0 {
			continue
		}
		size := promptBytes(msgs)
		if used+size > budget && len(picked) > 0 {
			break
		}
		used += size
		picked = append(picked, msgs)
	}
	out := make([]llm.Message, 0, 2*len(picked)+1)
	if system != "" {
		out = append(out, llm.Message{Role: string(chatstream.RoleSystem), Content: system})
	}
	for i := len(picked) - 1; i >= 0; i-- {
		out = append(out, picked[i]...)
	}
	return out
}

// promptBytes is the size of msgs as the history budget counts it: their
// text, tool arguments and tool outputs.
func promptBytes(msgs []llm.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Content)
		for _, c := range m.ToolCalls {
			n += len(c.Name) + len(c.Arguments)
		}
	}
	return n
}

// partsToMessages turns an answer's parts into the messages a provider
// takes: assistant messages with the text and the tool calls, each call
// followed by a tool message with its result. Reasoning is not sent back;
// a call without a result (its answer ended first) is left out, as a
// provider refuses a call that is not answered.
func partsToMessages(parts []chatstream.Part) []llm.Message {
	results := map[string]bool{}
	for _, p := range parts {
		if p.Type == chatstream.PartToolResult {
			results[p.CallID] = true
		}
	}
	var out []llm.Message
	var cur *llm.Message // the assistant message being built
	flush := func() {
		if cur != nil && (cur.Content != "" || len(cur.ToolCalls) > 0) {
			out = append(out, *cur)
		}
		cur = nil
	}
	for _, p := range parts {
		switch p.Type {
		case chatstream.PartText:
			if cur == nil {
				cur = &llm.Message{Role: string(chatstream.RoleAssistant)}
			}
			cur.Content += p.Text
		case chatstream.PartToolCall:
			if !results[p.CallID] {
				continue
			}
			if cur == nil {
				cur = &llm.Message{Role: string(chatstream.RoleAssistant)}
			}
			cur.ToolCalls = append(cur.ToolCalls, llm.ToolCall{ID: p.CallID, Name: p.Name, Arguments: p.Arguments})
		case chatstream.PartToolResult:
			flush()
			out = append(out, llm.Message{Role: "tool", ToolCallID: p.CallID, Content: p.Output})
		}
	}
	flush()
	return out
}
