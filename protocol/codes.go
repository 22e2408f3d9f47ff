package protocol

import "github.com/chatstream/chatstream"

// The codes clients see: in an HTTP error body, an error frame, or the error
// of a done frame and a stored message. This is the one list.
const (
	// Request errors, from the domain's error type (chatstream.Error).
	CodeInvalidRequest = chatstream.EINVALID
	CodeUnauthorized   = chatstream.EUNAUTHORIZED
	CodeNotFound       = chatstream.ENOTFOUND
	CodeConflict       = chatstream.ECONFLICT
	CodeTooLarge       = chatstream.ETOOLARGE
	CodeRateLimited    = chatstream.ERATELIMIT
	CodeUnavailable    = chatstream.EUNAVAILABLE
	CodeInternal       = chatstream.EINTERNAL

	// CodeMethodNotAllowed answers an HTTP method a route does not take.
	CodeMethodNotAllowed = "method_not_allowed"

	// Error frames only.
	CodeInvalidFrame         = "invalid_frame"          // not a text frame holding a JSON object of the expected shape
	CodeUnknownType          = "unknown_type"           // a frame type the server does not know
	CodeTooManySubscriptions = "too_many_subscriptions" // the socket follows or watches too many already

	// Why a generation failed (done.error.code, message.error.code).
	CodeWorkerLost   = "worker_lost"   // the node generating it died mid-answer
	CodeInterrupted  = "interrupted"   // the node generating it shut down mid-answer
	CodeStreamLost   = "stream_lost"   // Redis lost the stream before its end was written
	CodeStoreRefused = "store_refused" // Postgres refused to store the answer as it was
	// The model server's failures.
	CodeLLMRateLimited = "llm_rate_limited"
	CodeLLMUnavailable = "llm_unavailable"
	CodeLLMTruncated   = "llm_truncated"
	CodeLLMTimeout     = "llm_timeout"
	CodeLLMCancelled   = "llm_cancelled"
	CodeLLMError       = "llm_error"
)

// ErrStreamNotFound answers every stream id a user may not see: missing,
// another user's, or not an assistant message's — all exactly alike.
var ErrStreamNotFound = chatstream.Errorf(chatstream.ENOTFOUND, "Stream not found.")
