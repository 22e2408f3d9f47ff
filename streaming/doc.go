// Package streaming is chatstream's Redis adapter: the client (a single
// Redis or a Cluster), the fair generation queue, the per-stream chunk log
// with its pub/sub channel, conversation events, and the hub that holds the
// node's pub/sub connections and dispatches what they carry.
package streaming
