package tools

import (
	"strings"
	"testing"
)

// A bad TOOLS_FILE is refused with one line that names the problem.
func TestParse_Errors(t *testing.T) {
	for _, c := range []struct {
		name, file, want string
	}{
		{"not JSON", "{\n\"tools\": [\n}", "invalid JSON at line 3"},
		{"wrong type", `{"tools": {"name": "x"}}`, "at line 1: tools must be"},
		{"unknown field", `{"tools": [], "extra": 1}`, `unknown field "extra"`},
		{"trailing data", `{"tools": [{"name":"a","url":"http://h/"}]} {}`, "trailing data"},
		{"no tools", `{"tools": []}`, "no tools"},
		{"bad name", `{"tools": [{"name": "has space", "url": "http://h/"}]}`, `tool 1: name "has space"`},
		{"bad url", `{"tools": [{"name": "a", "url": "ftp://h/"}]}`, `tool "a": url "ftp://h/" is not an http(s) URL`},
		{"missing url", `{"tools": [{"name": "a"}]}`, `tool "a": url "" is not`},
		{"bad timeout", `{"tools": [{"name": "a", "url": "http://h/", "timeout": "soon"}]}`, `tool "a": timeout "soon"`},
		{"negative timeout", `{"tools": [{"name": "a", "url": "http://h/", "timeout": "-1s"}]}`, `timeout "-1s"`},
		{"duplicate", `{"tools": [{"name": "a", "url": "http://h/"}, {"name": "a", "url": "http://h/"}]}`, `tool "a" is defined twice`},
		{"schema not an object", `{"tools": [{"name": "a", "url": "http://h/", "parameters": 5}]}`, `tool "a": parameters:`},
		{"schema with a bad keyword", `{"tools": [{"name": "a", "url": "http://h/", "parameters": {"type": "nope"}}]}`, `tool "a": parameters:`},
		{"schema that loads a URL", `{"tools": [{"name": "a", "url": "http://h/", "parameters": {"$ref": "http://example.com/s.json"}}]}`, `tool "a": parameters:`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.file), nil)
			if err == nil {
				t.Fatalf("Parse(%s) took it", c.file)
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q, want one line with %q", msg, c.want)
			}
		})
	}
}

func TestParse_Tools(t *testing.T) {
	s, err := Parse([]byte(`{"tools": [
		{"name": "weather", "description": "The weather.", "url": "https://tools.example/weather",
		 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "timeout": "5s"},
		{"name": "delete_file", "url": "http://127.0.0.1:9/delete", "requires_approval": true}
	]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 2 || !s.RequiresApproval("delete_file") || s.RequiresApproval("weather") || s.RequiresApproval("none") {
		t.Fatalf("set = %+v", s.tools)
	}
	w, _ := s.Lookup("weather")
	if w.Timeout.String() != "5s" || w.Description != "The weather." {
		t.Fatalf("weather = %+v", w)
	}
	if d, _ := s.Lookup("delete_file"); d.Timeout != DefaultTimeout || string(d.Parameters) != `{"type":"object"}` {
		t.Fatalf("delete_file = %+v", d)
	}
	offer := s.Offer()
	if len(offer) != 2 || offer[0].Name != "delete_file" || offer[1].Name != "weather" {
		t.Fatalf("offer = %+v", offer)
	}
}
