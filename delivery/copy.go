package delivery

import (
	"slices"

	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// cacheMaxBytes bounds a stream's cached frames on a node (about 150 chunk
// frames, five seconds of a fast answer). A resuming client
// holds a recent index, so the newest frames are the ones that serve; an
// older start costs one history read.
const cacheMaxBytes = 16 << 10

// logCache is the node's copy of a stream's chunk log: frames [from, end())
// and, once the stream is over, its done frame. While valid it is exactly
// the log up to the newest chunk the node has received: it starts from a
// history read made with the channel subscribed — anything published later
// reaches the node live, in order — and every live chunk extends it. A
// follower whose next index lies inside it catches up from it without a
// read: a resume storm on a node costs one read per stream, not one per
// batch of resuming sockets.
//
// A resync (live messages may have been lost) or a gap in the live sequence
// invalidates it; the next history read rebuilds it. Log entries never
// change once appended, so a frame held here is the frame Redis holds.
type logCache struct {
	valid  bool
	from   int64
	frames [][]byte
	size   int    // bytes in frames
	done   []byte // the done frame, once seen
}

func (c *logCache) end() int64 { return c.from + int64(len(c.frames)) }

func (c *logCache) invalidate() { *c = logCache{} }

// covers reports whether the cache can serve followers whose next indexes
// lie between lo and hi. One whose next lies beyond the cache's end has
// chunks this node has not seen yet (received through another node, say):
// only Redis can tell whether they exist, so the cache does not answer.
func (c *logCache) covers(lo, hi int64) bool { return c.valid && lo >= c.from && hi <= c.end() }

// history is the cache as a history read from index from would return it.
// The frames are shared, not copied: trimming only reslices, and appends
// never write to an index already handed out.
func (c *logCache) history(from int64) (streaming.History, []byte) {
	end := c.end()
	return streaming.History{Meta: streaming.Meta{Exists: true, N: end}, From: from, Frames: c.frames[from-c.from:]}, c.done
}

// fill rebuilds the cache from a history read that started after fill began
// recording live frames, then applies those frames in order.
func (c *logCache) fill(streamID string, hist streaming.History, live [][]byte) {
	*c = logCache{valid: true, from: hist.From, frames: hist.Frames}
	for _, fr := range hist.Frames {
		c.size += len(fr)
	}
	if hist.Meta.Status.Final() {
		c.done = hist.Meta.DoneFrame(streamID)
	}
	for _, fr := range live {
		if typ, idx, ok := protocol.Scan(fr); ok {
			c.observe(typ, idx, fr)
		}
	}
	from := c.from
	c.trim()
	if c.from != from {
		// Trimming only reslices: copy, or the whole read stays in memory
		// for as long as the stream is followed.
		c.frames = slices.Clone(c.frames)
	}
}

// observe applies a live frame: the next chunk extends the cache, an old one
// is already in it, a later one is a gap that invalidates it; a done frame
// for the last chunk completes it.
func (c *logCache) observe(typ string, idx int64, frame []byte) {
	if !c.valid {
		return
	}
	switch typ {
	case protocol.TypeChunk:
		switch end := c.end(); {
		case c.done != nil && idx >= end:
			c.invalidate() // a chunk after done: not the log we know
		case idx == end:
			c.frames = append(c.frames, frame)
			c.size += len(frame)
			c.trim()
		case idx > end:
			c.invalidate()
		}
	case protocol.TypeDone:
		if idx != c.end()-1 {
			c.invalidate()
			return
		}
		c.done = frame
	}
}

// trim drops the oldest frames beyond cacheMaxBytes, keeping at least one.
// Appends reallocate the slice as it grows, which lets go of the dropped
// frames' memory; fill copies.
func (c *logCache) trim() {
	for c.size > cacheMaxBytes && len(c.frames) > 1 {
		c.size -= len(c.frames[0])
		c.frames = c.frames[1:]
		c.from++
	}
}
