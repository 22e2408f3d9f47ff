package server

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// handle serves one client frame. Bad frames get an error frame and change
// nothing; the socket stays open. A panic while serving one is logged and
// answered as an internal error: it takes down neither the socket nor the
// node.
func (ss *session) handle(data []byte) {
	defer func() {
		if v := recover(); v != nil {
			ss.srv.metrics.panics.Inc()
			ss.logger.Error("panic serving a websocket frame; the socket stays open", "panic", v, "stack", string(debug.Stack()))
			ss.sendError(nil, "", chatstream.EINTERNAL, "Internal error.")
		}
	}()
	f, err := protocol.DecodeClientFrame(data)
	if err != nil {
		ss.sendError(f.RequestID, "", protocol.CodeInvalidFrame, "The frame is not a JSON object of the expected shape: "+jsonProblem(err)+".")
		return
	}
	rid := f.RequestID
	switch f.Type {
	case protocol.TypeSubscribe:
		ss.subscribe(rid, f)
	case protocol.TypeUnsubscribe:
		ss.unsubscribe(rid, f)
	case protocol.TypeWatch:
		ss.watch(rid, f)
	case protocol.TypeUnwatch:
		ss.unwatch(rid, f)
	case protocol.TypeSend:
		ss.send(rid, f)
	case protocol.TypeCancel:
		ss.cancelStream(rid, f)
	case protocol.TypeApprove:
		ss.approve(rid, f)
	case protocol.TypeRegenerate:
		ss.regenerate(rid, f)
	case protocol.TypeEdit:
		ss.edit(rid, f)
	case "":
		ss.sendError(rid, "", protocol.CodeInvalidRequest, "Field \"type\" is required.")
	default:
		ss.sendError(rid, "", protocol.CodeUnknownType, "Unknown frame type \""+truncate(f.Type, 32)+"\".")
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// requireID reads a required id field; false means an error frame was sent.
func (ss *session) requireID(rid protocol.RequestID, field string, v *string) (string, bool) {
	if v == nil || *v == "" {
		ss.sendError(rid, "", chatstream.EINVALID, "Field \""+field+"\" is required.")
		return "", false
	}
	return *v, true
}

// opCtx bounds the work one frame causes.
func (ss *session) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(ss.ctx, 30*time.Second)
}

// maxLastIndex is the largest last_index a client may claim: the largest
// integer a JavaScript client holds exactly. No stream comes near it.
const maxLastIndex = 1<<53 - 1

// allowSubscribe takes a token for a subscribe or watch frame; false means
// a rate_limited error frame was sent.
func (ss *session) allowSubscribe(rid protocol.RequestID, streamID string) bool {
	wait := ss.subscribes.take(time.Now())
	if wait == 0 {
		return true
	}
	ss.sendErrorFrame(protocol.Error{Type: protocol.TypeError, RequestID: rid, StreamID: streamID, Code: chatstream.ERATELIMIT,
		Message: "Too many subscriptions on this socket; slow down.", RetryAfter: retryAfterSeconds(wait)})
	return false
}

func (ss *session) subscribe(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "stream_id", f.StreamID)
	if !ok || !ss.allowSubscribe(rid, id) {
		return
	}
	last := int64(-1)
	if f.LastIndex != nil {
		last = *f.LastIndex
	}
	if last < -1 || last > maxLastIndex {
		ss.sendError(rid, id, chatstream.EINVALID, fmt.Sprintf("Field \"last_index\" must be from -1 to %d.", int64(maxLastIndex)))
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	if !validID(id) {
		ss.sendErr(rid, id, protocol.ErrStreamNotFound)
		return
	}
	if err := ss.srv.gens.Authorize(ctx, ss.user, id); err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ss.follow(ctx, rid, id, last)
}

// follow starts following a stream the user may see, replacing an earlier
// follow of the same stream.
func (ss *session) follow(ctx context.Context, rid protocol.RequestID, id string, last int64) {
	ss.mu.Lock()
	if old := ss.follows[id]; old != nil {
		old.Close()
		delete(ss.follows, id)
	}
	active := 0
	for sid, fl := range ss.follows {
		if fl.Ended() {
			fl.Close()
			delete(ss.follows, sid)
		} else {
			active++
		}
	}
	ss.mu.Unlock()
	if active >= ss.srv.cfg.WS.MaxFollows {
		ss.sendError(rid, id, protocol.CodeTooManySubscriptions, "This socket follows too many streams; unsubscribe some first.")
		return
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeSubscribed, RequestID: rid, StreamID: id})
	fl, err := ss.srv.streams.Follow(ctx, id, last, ss)
	if err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ss.mu.Lock()
	if ss.follows == nil { // the socket closed meanwhile
		ss.mu.Unlock()
		fl.Close()
		return
	}
	ss.follows[id] = fl
	ss.mu.Unlock()
}

func (ss *session) unsubscribe(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "stream_id", f.StreamID)
	if !ok {
		return
	}
	ss.mu.Lock()
	fl := ss.follows[id]
	delete(ss.follows, id)
	ss.mu.Unlock()
	if fl != nil {
		fl.Close()
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeUnsubscribed, RequestID: rid, StreamID: id})
}

func (ss *session) watch(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "conversation_id", f.ConversationID)
	if !ok || !ss.allowSubscribe(rid, "") {
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	if _, err := ss.srv.store.FindConversation(ctx, ss.user, id); err != nil {
		ss.sendErr(rid, "", err)
		return
	}
	ss.mu.Lock()
	_, already := ss.watches[id]
	n := len(ss.watches)
	ss.mu.Unlock()
	if already {
		ss.sendJSON(protocol.Ack{Type: protocol.TypeWatching, RequestID: rid, ConversationID: id})
		return
	}
	if n >= ss.srv.cfg.WS.MaxWatches {
		ss.sendError(rid, "", protocol.CodeTooManySubscriptions, "This socket watches too many conversations; unwatch some first.")
		return
	}
	unwatch, err := ss.srv.watcher.Watch(ctx, id, ss)
	if err != nil {
		ss.sendErr(rid, "", err)
		return
	}
	ss.mu.Lock()
	if ss.watches == nil {
		ss.mu.Unlock()
		unwatch()
		return
	}
	if prev, ok := ss.watches[id]; ok {
		prev()
	}
	ss.watches[id] = unwatch
	ss.mu.Unlock()
	ss.sendJSON(protocol.Ack{Type: protocol.TypeWatching, RequestID: rid, ConversationID: id})
}

func (ss *session) unwatch(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "conversation_id", f.ConversationID)
	if !ok {
		return
	}
	ss.mu.Lock()
	unwatch := ss.watches[id]
	delete(ss.watches, id)
	ss.mu.Unlock()
	if unwatch != nil {
		unwatch()
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeUnwatched, RequestID: rid, ConversationID: id})
}

func (ss *session) send(rid protocol.RequestID, f protocol.ClientFrame) {
	conv, ok := ss.requireID(rid, "conversation_id", f.ConversationID)
	if !ok {
		return
	}
	ss.startTurn(rid, f, chatstream.Turn{Kind: chatstream.TurnSend, ConversationID: conv})
}

func (ss *session) edit(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "message_id", f.MessageID)
	if !ok {
		return
	}
	ss.startTurn(rid, f, chatstream.Turn{Kind: chatstream.TurnEdit, MessageID: id})
}

func (ss *session) regenerate(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.requireID(rid, "message_id", f.MessageID)
	if !ok {
		return
	}
	ss.startTurn(rid, f, chatstream.Turn{Kind: chatstream.TurnRegenerate, MessageID: id})
}

// startTurn serves a send, edit or regenerate: accepted, and the socket
// follows the new answer from its start.
func (ss *session) startTurn(rid protocol.RequestID, f protocol.ClientFrame, t chatstream.Turn) {
	t.UserID = ss.user
	if t.Kind != chatstream.TurnRegenerate {
		if err := ss.srv.validateTurn(f.Content, f.ClientMessageID); err != nil {
			ss.sendErr(rid, "", err)
			return
		}
		t.Content = *f.Content
		if f.ClientMessageID != nil {
			t.ClientMessageID = *f.ClientMessageID
		}
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	st, err := ss.srv.gens.Start(ctx, t)
	if err != nil {
		ss.sendErr(rid, "", err)
		return
	}
	ss.sendJSON(protocol.Accepted{Type: protocol.TypeAccepted, RequestID: rid, UserMessage: st.User, AssistantMessage: st.Assistant,
		StreamID: st.Assistant.ID})
	ss.follow(ctx, nil, st.Assistant.ID, -1)
}

// streamOf reads the stream_id of a frame about a stream; false means an
// error frame was sent.
func (ss *session) streamOf(rid protocol.RequestID, f protocol.ClientFrame) (string, bool) {
	id, ok := ss.requireID(rid, "stream_id", f.StreamID)
	if !ok {
		return "", false
	}
	if !validID(id) {
		ss.sendErr(rid, id, protocol.ErrStreamNotFound)
		return "", false
	}
	return id, true
}

func (ss *session) cancelStream(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.streamOf(rid, f)
	if !ok {
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	if err := ss.srv.gens.Cancel(ctx, ss.user, id); err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeCancelling, RequestID: rid, StreamID: id})
}

func (ss *session) approve(rid protocol.RequestID, f protocol.ClientFrame) {
	id, ok := ss.streamOf(rid, f)
	if !ok {
		return
	}
	if err := validateApproval(f.CallID, f.Approved); err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ctx, cancel := ss.opCtx()
	defer cancel()
	if err := ss.srv.gens.Approve(ctx, ss.user, id, *f.CallID, *f.Approved); err != nil {
		ss.sendErr(rid, id, err)
		return
	}
	ss.sendJSON(protocol.Ack{Type: protocol.TypeAnswered, RequestID: rid, StreamID: id, CallID: *f.CallID})
}
