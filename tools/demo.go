package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Demo returns the offline demo's built-in tools, which run in-process:
// clock (the time now), calculator (arithmetic) and save_note, which asks
// for the user's approval first. The demo model calls them when a message
// starts with "/demo tool=NAME".
func Demo() *Set {
	s, err := newSet([]*Tool{
		{Name: "clock", Description: "The current date and time.",
			Parameters: json.RawMessage(`{"type":"object","properties":{"timezone":{"type":"string"}}}`),
			run: func(_ context.Context, _ Call, args any) Result {
				loc := time.UTC
				if m, ok := args.(map[string]any); ok {
					if tz, ok := m["timezone"].(string); ok && tz != "" {
						if l, err := time.LoadLocation(tz); err == nil {
							loc = l
						}
					}
				}
				return Result{Output: time.Now().In(loc).Format(time.RFC1123)}
			}},
		{Name: "calculator", Description: "Evaluates an arithmetic expression with + - * / and parentheses.",
			Parameters: json.RawMessage(`{"type":"object","properties":{"expression":{"type":"string"}},"required":["expression"]}`),
			run: func(_ context.Context, _ Call, args any) Result {
				expr, _ := args.(map[string]any)["expression"].(string)
				v, err := evaluate(expr)
				if err != nil {
					return errorResult("%s", err)
				}
				return Result{Output: strconv.FormatFloat(v, 'g', 12, 64)}
			}},
		{Name: "save_note", Description: "Saves a note for the user (asks the user first).", RequiresApproval: true,
			Parameters: json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`),
			run: func(_ context.Context, _ Call, args any) Result {
				text, _ := args.(map[string]any)["text"].(string)
				return Result{Output: fmt.Sprintf("Saved the note %q.", text)}
			}},
	})
	if err != nil {
		panic(err) // the demo's own schemas: cannot happen
	}
	return s
}

// evaluate computes an arithmetic expression: numbers, + - * /, unary
// minus and parentheses.
func evaluate(expr string) (float64, error) {
	p := &calc{s: strings.ReplaceAll(expr, " ", "")}
	v, err := p.sum()
	if err == nil && p.i < len(p.s) {
		err = fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
	}
	if err == nil && (math.IsInf(v, 0) || math.IsNaN(v)) {
		err = fmt.Errorf("the result is not a number")
	}
	return v, err
}

// calc is a recursive-descent parser of arithmetic.
type calc struct {
	s     string
	i     int
	depth int
}

func (p *calc) sum() (float64, error) {
	v, err := p.product()
	for err == nil && p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
		op := p.s[p.i]
		p.i++
		var w float64
		if w, err = p.product(); op == '+' {
			v += w
		} else {
			v -= w
		}
	}
	return v, err
}

func (p *calc) product() (float64, error) {
	v, err := p.factor()
	for err == nil && p.i < len(p.s) && (p.s[p.i] == '*' || p.s[p.i] == '/') {
		op := p.s[p.i]
		p.i++
		var w float64
		if w, err = p.factor(); op == '*' {
			v *= w
		} else {
			v /= w
		}
	}
	return v, err
}

func (p *calc) factor() (float64, error) {
	if p.i >= len(p.s) {
		return 0, fmt.Errorf("the expression ends too soon")
	}
	switch c := p.s[p.i]; {
	case c == '-':
		p.i++
		v, err := p.factor()
		return -v, err
	case c == '(':
		if p.depth++; p.depth > 100 {
			return 0, fmt.Errorf("too many parentheses")
		}
		p.i++
		v, err := p.sum()
		if err == nil && (p.i >= len(p.s) || p.s[p.i] != ')') {
			err = fmt.Errorf("a parenthesis is not closed")
		}
		p.i++
		p.depth--
		return v, err
	}
	start := p.i
	for p.i < len(p.s) && (p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.s[p.i] == '.') {
		p.i++
	}
	if start == p.i {
		return 0, fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
	}
	return strconv.ParseFloat(p.s[start:p.i], 64)
}
