// Package protocol is chatstream's wire protocol: every frame a client and
// the server exchange on a socket (and the same JSON over other transports),
// the builders and scanners the hot path uses without decoding, and the
// error codes clients see. It imports nothing of chatstream's but the root
// package, so that any client or tool can use it alone.
package protocol
