package streaming

// Keys names the Redis keys and channels. Stream keys carry the stream id as
// a hash tag, so that on a Redis Cluster a stream's list, meta hash and
// channel share one slot; the queue's keys share the {queue} tag.
type Keys struct {
	// Prefix is put before every name; empty in production, unique per test.
	Prefix string
}

// Chunks is the list of chunk frames of stream s.
func (k Keys) Chunks(s string) string { return k.Prefix + "stream:{" + s + "}:chunks" }

// Meta is the hash of stream s: status, owner, epoch, chunk count, ….
func (k Keys) Meta(s string) string { return k.Prefix + "stream:{" + s + "}:meta" }

// Parts is the compacted value of ended stream s: its parts, which stand
// in for its chunks once they are gone (see ChunkLog.CompactAfter).
func (k Keys) Parts(s string) string { return k.Prefix + "stream:{" + s + "}:parts" }

// Channel is the pub/sub channel of stream s: chunk and done frames.
func (k Keys) Channel(s string) string { return k.Prefix + "stream:{" + s + "}" }

// ControlChannel carries the requests for stream s to its worker: "cancel",
// and "approval:<call id>" when the user answered a tool call. (Its name
// is the one it had when it carried cancels only, so that nodes of either
// version hear each other.)
func (k Keys) ControlChannel(s string) string { return k.Prefix + "stream:{" + s + "}:cancel" }

// Deletions carries the stream ids of each deleted conversation to every
// node, which forgets what it remembers of them (their owners).
func (k Keys) Deletions() string { return k.Prefix + "{deletions}" }

// ConversationChannel carries message events of conversation c.
func (k Keys) ConversationChannel(c string) string { return k.Prefix + "conversation:{" + c + "}" }

// Pending is the list of tickets, one per job waiting for a worker: what
// workers block on.
func (k Keys) Pending() string { return k.Prefix + "{queue}:pending" }

// Jobs is the sorted set of waiting jobs, by round (see Queue).
func (k Keys) Jobs() string { return k.Prefix + "{queue}:jobs" }

// Rounds maps each user with waiting jobs to the round of their last one.
func (k Keys) Rounds() string { return k.Prefix + "{queue}:rounds" }

// Round is the round being served: that of the job taken last.
func (k Keys) Round() string { return k.Prefix + "{queue}:round" }

// Seq numbers the jobs queued, to keep arrival order within a round.
func (k Keys) Seq() string { return k.Prefix + "{queue}:seq" }

// Processing is the list of jobs taken by the workers of node n.
func (k Keys) Processing(n string) string { return k.Prefix + "{queue}:processing:" + n }

// Heartbeat exists while node n is alive.
func (k Keys) Heartbeat(n string) string { return k.Prefix + "{queue}:node:" + n }

// Nodes is the set of nodes that may hold jobs.
func (k Keys) Nodes() string { return k.Prefix + "{queue}:nodes" }

// Sweep is held by the node that sweeps for lost streams this period.
func (k Keys) Sweep() string { return k.Prefix + "{queue}:sweep" }
