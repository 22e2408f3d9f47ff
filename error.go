package chatstream

import (
	"errors"
	"fmt"
	"time"
)

// Error codes. They are the snake_case codes clients see in the HTTP error
// body and in WebSocket error frames.
const (
	EINVALID      = "invalid_request"
	EUNAUTHORIZED = "unauthorized"
	ENOTFOUND     = "not_found"
	ECONFLICT     = "conflict"
	ETOOLARGE     = "too_large"
	ERATELIMIT    = "rate_limited"
	EUNAVAILABLE  = "unavailable"
	EINTERNAL     = "internal"
)

// Error is an error meant for the client: a code from the list above and a
// human-readable message. Anything that is not an *Error is internal and its
// text is never shown to clients.
type Error struct {
	Code    string
	Message string
	// RetryAfter, when positive, is how long a refused client should wait
	// before trying again (the Retry-After of a 429).
	RetryAfter time.Duration
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("chatstream error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// RateLimited returns a rate_limited error that says when to try again.
func RateLimited(retryAfter time.Duration, format string, args ...any) *Error {
	return &Error{Code: ERATELIMIT, Message: fmt.Sprintf(format, args...), RetryAfter: retryAfter}
}

// RetryAfter returns the RetryAfter of the first *Error in err's chain, 0
// if none says.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the first *Error in err's chain, or a
// generic message for internal errors, so internals never reach a client.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}
