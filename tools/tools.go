// Package tools holds the tools a model may call: those TOOLS_FILE names,
// which the worker calls over HTTP, and the offline demo's built-in ones,
// which run in-process. A Set checks each call's arguments against the
// tool's schema before it runs it.
package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/chatstream/chatstream/llm"
)

// DefaultTimeout is how long a tool may take unless its spec says.
const DefaultTimeout = 30 * time.Second

// MaxOutput bounds a tool's output; a longer one is an error result.
const MaxOutput = 64 << 10

// Call is one call of a tool, as the worker makes it.
type Call struct {
	CallID    string
	Name      string
	Arguments string // the JSON text the model wrote
	// Who the call is for.
	ConversationID, MessageID, UserID string
}

// Result is what a call returned: Output, the tool's answer (JSON output
// as its JSON text), or with IsError why there is none.
type Result struct {
	Output  string
	IsError bool
}

func errorResult(format string, args ...any) Result {
	return Result{Output: fmt.Sprintf(format, args...), IsError: true}
}

// runner runs a tool once its call's arguments are known to be valid.
type runner func(ctx context.Context, c Call, args any) Result

// Tool is one tool of a Set.
type Tool struct {
	Name, Description string
	Parameters        json.RawMessage
	// RequiresApproval: a call waits for the user's approval.
	RequiresApproval bool
	// Timeout bounds one call.
	Timeout time.Duration

	schema *jsonschema.Schema
	run    runner
}

// Set is the tools offered to a model. Its zero value and nil hold none.
type Set struct {
	tools map[string]*Tool
}

// newSet builds a set, compiling each tool's parameter schema.
func newSet(tools []*Tool) (*Set, error) {
	s := &Set{tools: map[string]*Tool{}}
	for _, t := range tools {
		if _, dup := s.tools[t.Name]; dup {
			return nil, fmt.Errorf("tool %q is defined twice", t.Name)
		}
		sch, err := compile(t.Parameters)
		if err != nil {
			return nil, fmt.Errorf("tool %q: parameters: %w", t.Name, err)
		}
		t.schema = sch
		if t.Timeout <= 0 {
			t.Timeout = DefaultTimeout
		}
		s.tools[t.Name] = t
	}
	return s, nil
}

// compile compiles a JSON Schema held in memory; it refers to nothing
// outside itself (no file or URL is ever loaded).
func compile(raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	const loc = "mem://tool/parameters.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, oneLine(err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, oneLine(err)
	}
	return sch, nil
}

// noLoader refuses every reference to a schema outside the tool's own.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("refers to %s, which is not loaded", url)
}

// oneLine is err's message on one line.
func oneLine(err error) error {
	return fmt.Errorf("%s", strings.Join(strings.Fields(err.Error()), " "))
}

// Len returns the number of tools.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.tools)
}

// Offer returns the tools as the model is offered them, by name.
func (s *Set) Offer() []llm.Tool {
	if s.Len() == 0 {
		return nil
	}
	out := make([]llm.Tool, 0, len(s.tools))
	for _, t := range s.tools {
		out = append(out, llm.Tool{Name: t.Name, Description: t.Description, Parameters: t.Parameters})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns the tool named name.
func (s *Set) Lookup(name string) (*Tool, bool) {
	if s == nil {
		return nil, false
	}
	t, ok := s.tools[name]
	return t, ok
}

// RequiresApproval reports whether a call of the tool named name waits for
// the user's approval.
func (s *Set) RequiresApproval(name string) bool {
	t, ok := s.Lookup(name)
	return ok && t.RequiresApproval
}

// Run calls the tool of c.Name with c's arguments, within the tool's
// timeout. A call that cannot be made (no such tool, arguments that are not
// JSON or break the schema) and a tool that fails are error results, never
// errors: the model is told and goes on.
func (s *Set) Run(ctx context.Context, c Call) Result {
	t, ok := s.Lookup(c.Name)
	if !ok {
		return errorResult("There is no tool named %q.", c.Name)
	}
	args, err := jsonschema.UnmarshalJSON(strings.NewReader(c.Arguments))
	if err != nil {
		return errorResult("The arguments are not valid JSON.")
	}
	if err := t.schema.Validate(args); err != nil {
		return errorResult("The arguments do not match the tool's parameters: %s", oneLine(err))
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	r := t.safeRun(ctx, c, args)
	if !r.IsError && len(r.Output) > MaxOutput {
		return errorResult("The tool's output of %d bytes is over the limit of %d.", len(r.Output), MaxOutput)
	}
	return r
}

// safeRun runs the tool; a panic (a bug of an in-process tool) is an error
// result, not the node's end.
func (t *Tool) safeRun(ctx context.Context, c Call, args any) (r Result) {
	defer func() {
		if v := recover(); v != nil {
			r = errorResult("The tool failed: %v", v)
		}
	}()
	return t.run(ctx, c, args)
}
