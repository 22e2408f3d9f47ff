package streaming

// Queued is how many messages wait on the dispatch goroutine of channel.
func (h *Hub) Queued(channel string) int { return len(h.shardOf(channel).q) }
