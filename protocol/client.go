package protocol

import "encoding/json"

// The types of the frames a client sends.
const (
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypeWatch       = "watch"
	TypeUnwatch     = "unwatch"
	TypeSend        = "send"
	TypeCancel      = "cancel"
	TypeApprove     = "approve"
	TypeRegenerate  = "regenerate"
	TypeEdit        = "edit"
)

// RequestID is a client's request_id, echoed as it came (any JSON value).
type RequestID = json.RawMessage

// ClientFrame is any frame a client sends. A field a frame does not carry
// is nil.
type ClientFrame struct {
	Type           string    `json:"type"`
	RequestID      RequestID `json:"request_id,omitempty"`
	StreamID       *string   `json:"stream_id"`
	ConversationID *string   `json:"conversation_id"`
	Content        *string   `json:"content"`
	LastIndex      *int64    `json:"last_index"`
	// MessageID is the message a regenerate or edit starts from;
	// ClientMessageID makes a send or edit idempotent.
	MessageID       *string `json:"message_id"`
	ClientMessageID *string `json:"client_message_id"`
	// CallID and Approved are an approve frame's.
	CallID   *string `json:"call_id"`
	Approved *bool   `json:"approved"`
}

// MaxRequestID is the longest request_id echoed; a longer one is dropped.
const MaxRequestID = 128

// Echoable returns rid if it can be echoed: a JSON value of at most
// MaxRequestID bytes; else nil.
func Echoable(rid RequestID) RequestID {
	if len(rid) > MaxRequestID || !json.Valid(rid) {
		return nil
	}
	return rid
}

// DecodeClientFrame decodes a client frame. When it fails, the request_id
// alone may still be readable (a field of the wrong type fails the whole
// decode), and it is returned for the error's echo.
func DecodeClientFrame(data []byte) (ClientFrame, error) {
	var f ClientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		var only struct {
			RequestID RequestID `json:"request_id"`
		}
		_ = json.Unmarshal(data, &only)
		return ClientFrame{RequestID: Echoable(only.RequestID)}, err
	}
	f.RequestID = Echoable(f.RequestID)
	return f, nil
}
