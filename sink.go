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

// LiveSink is a Sink that can also write a live frame at once, on the
// caller's goroutine, when its client is not busy (a socket with nothing
// queued): no goroutine of its own is woken for the frame. SendLive never
// blocks either; when the frame cannot go out at once it is queued as Send
// queues it. Frames that come as a batch (a catch-up) go through Send, so
// that the sink writes them together.
type LiveSink interface {
	Sink
	SendLive(frame []byte) bool
}
