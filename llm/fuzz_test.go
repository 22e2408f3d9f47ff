package llm

import (
	"context"
	"io"
	"testing"
)

// FuzzDemoDirective: whatever a user's message says, the demo model's
// "/demo" line gives settings it can stream with, and a stream that ends.
func FuzzDemoDirective(f *testing.F) {
	for _, seed := range []string{"/demo tokens=3 rate=0\nq", "/demo tokens=-1 rate=-5", "/demo rate=1e308 tokens=99999999999999999999",
		"/demonstrate", "/demo\n", "", "/demo tokens=2 tokens=3 rate=NaN", "/demo rate=Inf\n/demo tokens=1"} {
		f.Add(seed)
	}
	d := NewDemo(DemoConfig{TokensPerSec: -1})
	f.Fuzz(func(t *testing.T, msg string) {
		q, p := d.params(msg)
		if p.tokens < 0 || len(q) > len(msg) {
			t.Fatalf("%q: question %q, tokens %d", msg, q, p.tokens)
		}
		if p.tokens > 50 || p.rate > 0 && p.rate < 1e6 {
			return // long or paced: the parse is what is checked
		}
		s, err := d.Stream(context.Background(), Request{Messages: []Message{{Role: "user", Content: msg}}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for range 1000 {
			if _, err := s.Recv(); err == io.EOF {
				return
			} else if err != nil {
				t.Fatal(err)
			}
		}
		t.Fatalf("%q: no end after 1000 deltas", msg)
	})
}
