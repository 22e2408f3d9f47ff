package worker

import (
	"bytes"
	"sync"
)

// ownersSize bounds the streams whose owner a node remembers.
const ownersSize = 16384

// owners remembers who owns a stream once a read has said so. A stream's
// owner never changes, so the answer stays right for as long as it is kept:
// a resume storm of thousands of sockets on one stream costs one read to
// authorise, not one per socket. The oldest entries give way first.
type owners struct {
	mu   sync.Mutex
	m    map[string]string
	ring []string // insertion order, for eviction
	next int
}

func newOwners(size int) *owners {
	return &owners{m: make(map[string]string, size), ring: make([]string, size)}
}

func (o *owners) get(streamID string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	u, ok := o.m[streamID]
	return u, ok
}

func (o *owners) put(streamID, userID string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.m[streamID]; ok {
		return
	}
	if old := o.ring[o.next]; old != "" {
		delete(o.m, old)
	}
	o.ring[o.next] = streamID
	o.next = (o.next + 1) % len(o.ring)
	o.m[streamID] = userID
}

// forget drops what is remembered of streamID (its conversation was
// deleted). Its slot in the ring stays until it comes round.
func (o *owners) forget(streamID string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.m, streamID)
}

// clear forgets everything.
func (o *owners) clear() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.m)
}

// deletions is the handler of the deletions channel: each message lists
// the streams of a deleted conversation, which the node forgets. A resync
// (messages may have been lost) forgets every owner: they are read again.
type deletions struct{ o *owners }

func (d deletions) OnMessage(_ string, payload []byte) {
	for id := range bytes.SplitSeq(payload, []byte("\n")) {
		d.o.forget(string(id))
	}
}

func (d deletions) OnResync(string) { d.o.clear() }
