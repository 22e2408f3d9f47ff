package llm

import (
	"bufio"
	"bytes"
	"io"
)

// reasoningKeys renames the "reasoning" of a streamed delta (as Ollama and
// OpenRouter send it) to "reasoning_content" (as DeepSeek and vLLM do, and
// as go-openai reads it), line by line. The key cannot be mistaken for text:
// inside a JSON string its quotes would be escaped.
func reasoningKeys(body io.ReadCloser) io.ReadCloser {
	return &keyRenamer{r: bufio.NewReader(body), c: body}
}

var (
	reasoningKey        = []byte(`"reasoning":`)
	reasoningContentKey = []byte(`"reasoning_content":`)
)

type keyRenamer struct {
	r   *bufio.Reader
	c   io.Closer
	buf []byte // the rest of the current line, renamed
	err error
}

func (k *keyRenamer) Read(p []byte) (int, error) {
	for len(k.buf) == 0 {
		if k.err != nil {
			return 0, k.err
		}
		line, err := k.r.ReadBytes('\n')
		k.err = err
		if bytes.Contains(line, reasoningKey) && !bytes.Contains(line, reasoningContentKey) {
			line = bytes.ReplaceAll(line, reasoningKey, reasoningContentKey)
		}
		k.buf = line
	}
	n := copy(p, k.buf)
	k.buf = k.buf[n:]
	return n, nil
}

func (k *keyRenamer) Close() error { return k.c.Close() }
