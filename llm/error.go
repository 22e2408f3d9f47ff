package llm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// ErrTruncated is wrapped by the error Recv returns when the server ended the
// stream (hung up, or sent [DONE]) before any finish reason arrived: the text
// received so far is incomplete.
var ErrTruncated = errors.New("llm: stream ended without a finish reason")

// ErrStalled is wrapped by the *Error Recv returns when the server sent no data
// for longer than the configured stall timeout.
var ErrStalled = errors.New("llm: stream stalled")

// Kind classifies an *Error.
type Kind string

// Kinds of *Error.
const (
	// KindRateLimited: the server answered 429 Too Many Requests.
	KindRateLimited Kind = "rate_limited"
	// KindUnavailable: a 5xx answer (or 408), a network failure such as a
	// refused or reset connection, or a stalled stream.
	KindUnavailable Kind = "unavailable"
	// KindAuth: the server answered 401 or 403; the API key is wrong.
	KindAuth Kind = "auth"
	// KindBadRequest: any other 4xx answer (unknown model, prompt too long, ...).
	KindBadRequest Kind = "bad_request"
	// KindStream: the server reported an error inside an open stream or sent
	// data that is not a valid chunk.
	KindStream Kind = "stream"
	// KindOther: anything else (invalid configuration, TLS failure, ...).
	KindOther Kind = "other"
)

// Error is a failure of a model server. Its text (Message, or Err's text
// when there is no Message) is the server's own, for logs only: show users
// Failure(err) instead.
type Error struct {
	Kind    Kind
	Status  int    // HTTP status, 0 if none
	Message string // the server's message, if any
	// RetryAfter is the wait the server asked for with a Retry-After header
	// on 429 or 503, 0 if none.
	RetryAfter time.Duration
	Err        error // the underlying error, if any
}

// Error implements the error interface.
func (e *Error) Error() string {
	s := "llm: " + string(e.Kind)
	if e.Status != 0 {
		s += fmt.Sprintf(" (status %d)", e.Status)
	}
	switch {
	case e.Message != "":
		s += ": " + e.Message
	case e.Err != nil:
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether trying again later may succeed: rate limits and
// unavailable servers.
func (e *Error) Retryable() bool {
	return e.Kind == KindRateLimited || e.Kind == KindUnavailable
}

// Failure turns an error of this package (or a context error) into the code
// and human message shown to the user. Messages never contain the server's
// text, URLs or keys. A nil err gives the zero Failure.
func Failure(err error) chatstream.Failure {
	var e *Error
	switch {
	case err == nil:
		return chatstream.Failure{}
	case errors.Is(err, ErrTruncated):
		return chatstream.Failure{Code: protocol.CodeLLMTruncated, Message: "The answer was cut off: the connection to the model was lost."}
	case errors.Is(err, ErrStalled):
		return chatstream.Failure{Code: protocol.CodeLLMTimeout, Message: "The model stopped responding."}
	case errors.Is(err, context.DeadlineExceeded):
		return chatstream.Failure{Code: protocol.CodeLLMTimeout, Message: "The model took too long to answer."}
	case errors.Is(err, context.Canceled):
		return chatstream.Failure{Code: protocol.CodeLLMCancelled, Message: "The answer was stopped."}
	case !errors.As(err, &e):
		return chatstream.Failure{Code: protocol.CodeLLMError, Message: "The model could not answer."}
	}
	switch e.Kind {
	case KindRateLimited:
		return chatstream.Failure{Code: protocol.CodeLLMRateLimited, Message: "The model is busy right now. Please try again in a moment."}
	case KindUnavailable:
		return chatstream.Failure{Code: protocol.CodeLLMUnavailable, Message: "The model is unavailable right now. Please try again later."}
	case KindAuth:
		return chatstream.Failure{Code: protocol.CodeLLMError, Message: "The model service refused this server's credentials."}
	case KindBadRequest:
		return chatstream.Failure{Code: protocol.CodeLLMError, Message: "The model could not process this conversation."}
	case KindStream:
		return chatstream.Failure{Code: protocol.CodeLLMError, Message: "The model failed while answering."}
	}
	return chatstream.Failure{Code: protocol.CodeLLMError, Message: "The model could not answer."}
}
