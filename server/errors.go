package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
)

// httpStatus maps an error code to its HTTP status.
func httpStatus(code string) int {
	switch code {
	case chatstream.EINVALID:
		return http.StatusBadRequest
	case chatstream.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case chatstream.ENOTFOUND:
		return http.StatusNotFound
	case chatstream.ECONFLICT:
		return http.StatusConflict
	case chatstream.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case chatstream.ERATELIMIT:
		return http.StatusTooManyRequests
	case chatstream.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError answers err in the contract's error shape. Internal errors are
// logged here and shown to the client only as a generic message.
func writeError(c *gin.Context, err error) {
	code := chatstream.ErrorCode(err)
	if code == chatstream.EINTERNAL {
		_ = c.Error(err) // the access log reports it with the request id
	}
	if d := chatstream.RetryAfter(err); d > 0 {
		c.Header("Retry-After", strconv.Itoa(retryAfterSeconds(d)))
	}
	writeStatus(c, httpStatus(code), code, chatstream.ErrorMessage(err))
}

func writeStatus(c *gin.Context, status int, code, message string) {
	c.AbortWithStatusJSON(status, gin.H{"error": gin.H{"code": code, "message": message}})
}

// bindJSON decodes the request body into v, limited to limit bytes. It
// answers the error itself and returns false when the body is not valid.
func bindJSON(c *gin.Context, v any, limit int64) bool {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	err := decodeJSON(c.Request.Body, v)
	if err == nil {
		// The body is in: the rest of the request is not bound by the
		// body's deadline (net/http reads on in the background, and a
		// deadline hit there would cancel the request).
		_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Time{})
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(c, chatstream.Errorf(chatstream.ETOOLARGE, "The request body is larger than %d bytes.", limit))
		} else {
			writeError(c, chatstream.Errorf(chatstream.EINVALID, "The request body is not valid JSON: %s.", jsonProblem(err)))
		}
		return false
	}
	return true
}

// retryAfterSeconds is d as the whole seconds of a Retry-After header,
// rounded up and at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}
