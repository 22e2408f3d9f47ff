package chatstream

import "regexp"

// TurnKind is what starts a generation.
type TurnKind int

// Turn kinds.
const (
	// TurnSend appends a user message to the conversation's current leaf.
	TurnSend TurnKind = iota
	// TurnEdit adds a user message beside another (the same parent).
	TurnEdit
	// TurnRegenerate adds an answer beside another (to the same user
	// message).
	TurnRegenerate
)

// Turn is one send, edit or regenerate.
type Turn struct {
	Kind   TurnKind
	UserID string
	// ConversationID is a send's; an edit or regenerate finds it from
	// MessageID: the user message edited, or the answer regenerated.
	ConversationID string
	MessageID      string
	// Content is the new user message (send and edit).
	Content string
	// ClientMessageID makes a send or edit idempotent; empty for none.
	ClientMessageID string
}

// Started is what a turn wrote: the user message (nil for a regenerate)
// and the streaming assistant message that answers it. Repeat says these
// are what an earlier turn with the same client message id answered:
// nothing was written.
type Started struct {
	User, Assistant *Message
	Repeat          bool
	// Conversation is the conversation after the turn (its current leaf
	// the new answer); nil for a repeat.
	Conversation *Conversation
}

// clientMessageID is what the contract takes as a client_message_id.
var clientMessageID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidClientMessageID reports whether id may be a client_message_id: 1 to
// 64 of A-Z a-z 0-9 _ -.
func ValidClientMessageID(id string) bool { return clientMessageID.MatchString(id) }
