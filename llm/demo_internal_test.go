package llm

import (
	"context"
	"testing"
)

// A very long answer is built a stretch at a time: the stream never holds
// much more text than demoSegmentWords words.
func TestDemoStream_segments(t *testing.T) {
	const n = 5*demoSegmentWords + 17
	d := NewDemo(DemoConfig{TokensPerSec: -1, Tokens: n})
	st, err := d.Stream(context.Background(), Request{Messages: []Message{{Role: "user", Content: "How do goroutines work?"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := st.(*demoStream)
	longest, stretches, text := 0, 0, ""
	for i := 0; ; i++ {
		delta, err := s.Recv()
		if err != nil {
			if i != n {
				t.Fatalf("%d deltas, then %v", i, err)
			}
			break
		}
		if s.text != text {
			text, stretches = s.text, stretches+1
			longest = max(longest, len(text))
		}
		if delta.Text == "" {
			t.Fatalf("delta %d is empty", i)
		}
	}
	if stretches < 5 || longest > 12*demoSegmentWords {
		t.Errorf("%d stretches, the longest %d bytes", stretches, longest)
	}
}
