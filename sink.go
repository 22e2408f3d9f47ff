package chatstream

// Sink is where the frames for one client go: a socket's (or another
// transport's) outbound queue, as the node's followers of streams and
// conversations see it. Send must not block; false means the queue is full
// and the client is being disconnected (it resumes from its last index), so
// nothing more is sent.
type Sink interface {
	Send(frame []byte) bool
	// Room is how many more frames Send takes now; history is handed over
	// in slices that fit, so a long catch-up never overflows the queue.
	Room() int
}
