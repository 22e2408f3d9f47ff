package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"time"
)

// file is TOOLS_FILE: {"tools":[{"name","description","parameters","url","timeout"?,"requires_approval"?}]}.
type file struct {
	Tools []struct {
		Name             string          `json:"name"`
		Description      string          `json:"description"`
		Parameters       json.RawMessage `json:"parameters"`
		URL              string          `json:"url"`
		Timeout          string          `json:"timeout"`
		RequiresApproval bool            `json:"requires_approval"`
	} `json:"tools"`
}

// toolName is what OpenAI takes as a function's name.
var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Load reads the tools of a TOOLS_FILE. Its error names the problem in one
// line: JSON that does not parse (with the line), a duplicate name, a bad
// name, URL, timeout or parameter schema (with the tool). client calls the
// tools; nil: a client of its own.
func Load(path string, client *http.Client) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b, client)
}

// Parse reads the tools of a TOOLS_FILE's content; see Load.
func Parse(b []byte, client *http.Client) (*Set, error) {
	if client == nil {
		client = &http.Client{}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, jsonError(b, err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	var tools []*Tool
	for i, ft := range f.Tools {
		name := ft.Name
		if !toolName.MatchString(name) {
			return nil, fmt.Errorf("tool %d: name %q must be 1 to 64 letters, digits, _ or -", i+1, name)
		}
		u, err := url.Parse(ft.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("tool %q: url %q is not an http(s) URL", name, ft.URL)
		}
		var timeout time.Duration
		if ft.Timeout != "" {
			if timeout, err = time.ParseDuration(ft.Timeout); err != nil || timeout <= 0 {
				return nil, fmt.Errorf("tool %q: timeout %q is not a positive Go duration such as 10s", name, ft.Timeout)
			}
		}
		if len(ft.Parameters) == 0 {
			ft.Parameters = json.RawMessage(`{"type":"object"}`)
		}
		t := &Tool{Name: name, Description: ft.Description, Parameters: ft.Parameters, RequiresApproval: ft.RequiresApproval,
			Timeout: timeout, run: httpRunner(client, ft.URL)}
		tools = append(tools, t)
	}
	if len(tools) == 0 {
		return nil, errors.New(`no tools: want {"tools":[{"name", "url", …}]}`)
	}
	return newSet(tools)
}

// jsonError says where the JSON of a file broke.
func jsonError(b []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at line %d: %v", lineOf(b, syn.Offset), syn)
	case errors.As(err, &typ):
		return fmt.Errorf("at line %d: %s must be %s", lineOf(b, typ.Offset), typ.Field, typ.Type)
	}
	return fmt.Errorf("invalid: %v", err)
}

func lineOf(b []byte, offset int64) int {
	return bytes.Count(b[:min(int(offset), len(b))], []byte("\n")) + 1
}

// httpRunner calls a tool over HTTP: POST url with the call, the call id
// as Idempotency-Key (a retried call is the same call), and takes a 2xx
// JSON answer's "output".
func httpRunner(client *http.Client, u string) runner {
	return func(ctx context.Context, c Call, args any) Result {
		body, _ := json.Marshal(map[string]any{
			"call_id": c.CallID, "name": c.Name, "arguments": args,
			"conversation_id": c.ConversationID, "message_id": c.MessageID, "user_id": c.UserID,
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return errorResult("The tool could not be called.")
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", c.CallID)
		res, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				if deadline, ok := ctx.Deadline(); ok && time.Now().After(deadline) {
					return errorResult("The tool did not answer in time.")
				}
				return errorResult("The call was stopped.")
			}
			return errorResult("The tool could not be reached.")
		}
		defer res.Body.Close()
		raw, err := io.ReadAll(io.LimitReader(res.Body, MaxOutput+1024))
		if err != nil {
			return errorResult("The tool's answer could not be read.")
		}
		if res.StatusCode < 200 || res.StatusCode > 299 {
			return errorResult("The tool answered %d %s.", res.StatusCode, http.StatusText(res.StatusCode))
		}
		var out struct {
			Output json.RawMessage `json:"output"`
		}
		if err := json.Unmarshal(raw, &out); err != nil || len(out.Output) == 0 {
			return errorResult(`The tool's answer is not JSON with an "output".`)
		}
		var text string
		if json.Unmarshal(out.Output, &text) == nil {
			return Result{Output: text}
		}
		return Result{Output: string(out.Output)}
	}
}
