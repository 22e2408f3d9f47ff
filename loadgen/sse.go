package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/chatstream/chatstream/protocol"
)

// sseClient reads streams over Server-Sent Events: one connection per
// follower, as a browser's EventSource holds.
var sseClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}}

// followSSE follows stream id from its start over SSE as user, accounting
// every chunk as a socket's follower does, until its done.
func (r *run) followSSE(ctx context.Context, user, id string) error {
	tok, err := r.token(ctx, user)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "GET", r.cfg.BaseURL+"/v1/streams/"+id+"/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	f := &follower{next: 0, since: time.Now().UnixMicro()}
	res, err := sseClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET events of %s: %s", id, res.Status)
	}
	r.sockets.Add(1)
	r.opened.Add(1)
	defer r.sockets.Add(-1)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue // event:, id:, blank and comment lines
		}
		now := time.Now()
		typ, idx, ok := protocol.Scan(data)
		if !ok {
			continue
		}
		switch typ {
		case protocol.TypeChunk:
			r.onChunk(f, idx, data, now)
		case protocol.TypeSnapshot:
			r.snapshots.Add(1)
			f.next = idx + 1
		case protocol.TypeDone:
			r.onDone(f, idx)
			r.flush(f)
			return nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("the events of %s ended before done", id)
}
