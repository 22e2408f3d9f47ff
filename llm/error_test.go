package llm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/protocol"
)

func TestFailure(t *testing.T) {
	const secret = "sk-secret-key http://internal:8000"
	tests := []struct {
		err  error
		code string
	}{
		{nil, ""},
		{fmt.Errorf("generate: %w", llm.ErrTruncated), protocol.CodeLLMTruncated},
		{&llm.Error{Kind: llm.KindUnavailable, Message: secret, Err: llm.ErrStalled}, protocol.CodeLLMTimeout},
		{context.DeadlineExceeded, protocol.CodeLLMTimeout},
		{fmt.Errorf("recv: %w", context.Canceled), protocol.CodeLLMCancelled},
		{&llm.Error{Kind: llm.KindRateLimited, Status: 429, Message: secret}, protocol.CodeLLMRateLimited},
		{fmt.Errorf("x: %w", &llm.Error{Kind: llm.KindUnavailable, Status: 503, Message: secret}), protocol.CodeLLMUnavailable},
		{&llm.Error{Kind: llm.KindAuth, Status: 401, Message: secret}, protocol.CodeLLMError},
		{&llm.Error{Kind: llm.KindBadRequest, Status: 400, Message: secret}, protocol.CodeLLMError},
		{&llm.Error{Kind: llm.KindStream, Message: secret}, protocol.CodeLLMError},
		{&llm.Error{Kind: llm.KindOther, Err: errors.New(secret)}, protocol.CodeLLMError},
		{errors.New(secret), protocol.CodeLLMError},
	}
	for _, tt := range tests {
		f := llm.Failure(tt.err)
		if f.Code != tt.code {
			t.Errorf("Failure(%v).Code = %q, want %q", tt.err, f.Code, tt.code)
		}
		if (f.Message == "") != (tt.err == nil) || strings.Contains(f.Message, "sk-") || strings.Contains(f.Message, "http") {
			t.Errorf("Failure(%v).Message = %q", tt.err, f.Message)
		}
	}
}

func TestError(t *testing.T) {
	cause := errors.New("connection reset")
	e := &llm.Error{Kind: llm.KindUnavailable, Status: 502, Err: cause}
	if !errors.Is(e, cause) {
		t.Error("Unwrap does not reach the cause")
	}
	if got, want := e.Error(), "llm: unavailable (status 502): connection reset"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	for kind, want := range map[llm.Kind]bool{
		llm.KindRateLimited: true, llm.KindUnavailable: true,
		llm.KindAuth: false, llm.KindBadRequest: false, llm.KindStream: false, llm.KindOther: false,
	} {
		if got := (&llm.Error{Kind: kind}).Retryable(); got != want {
			t.Errorf("%s: Retryable() = %v", kind, got)
		}
	}
}
