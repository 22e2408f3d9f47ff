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
)

// AskConfig is one question to a running server.
type AskConfig struct {
	BaseURL  string
	Secret   []byte // signs the token; empty uses the dev-token endpoint
	User     string
	Question string
	// Answer receives the answer's text as it streams.
	Answer io.Writer
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
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return res, fmt.Errorf("read: %w", err)
		}
		now := time.Now()
		var f struct {
			Type     string `json:"type"`
			StreamID string `json:"stream_id"`
			Content  string `json:"content"`
			Status   string `json:"status"`
			Code     string `json:"code"`
			Message  string `json:"message"`
			Error    *struct{ Code, Message string }
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
			fmt.Fprint(cfg.Answer, f.Content)
		case "snapshot":
			fmt.Fprint(cfg.Answer, "\n[snapshot]\n"+f.Content)
		case "done":
			if f.StreamID != res.StreamID {
				continue
			}
			res.Total = now.Sub(start)
			res.Status = f.Status
			if f.Error != nil {
				res.Error = f.Error.Code + ": " + f.Error.Message
			}
			if res.Chunks > 1 {
				res.AvgGap = gaps / time.Duration(res.Chunks-1)
			}
			fmt.Fprintln(cfg.Answer)
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
