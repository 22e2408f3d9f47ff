// Package delivery is the node's exactly-once delivery engine: it follows
// streams for sockets (catch-up from the chunk log, then live from the hub,
// every index once and in order, with the node's copy of each followed log)
// and watches conversations for them (live events, refilled after a
// resync). It builds on the Redis adapter (streaming) and speaks protocol.
package delivery
