package streaming

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// Approvals. A tool call that needs the user's approval is marked waiting
// in its stream's meta when its chunk is appended (AppendAwaiting). The
// first answer recorded for it wins, whoever gives it: the user (Answer),
// or the worker when the wait is over (Answer with AnswerExpired). The
// worker hears of an answer on the stream's control channel and reads it
// from the meta, so that an answer given while no worker held the stream
// is found by the next one.

// The answers to a waiting call.
const (
	AnswerApproved = "approved"
	AnswerDenied   = "denied"
	AnswerExpired  = "expired"
)

// Errors of Answer.
var (
	// ErrNotWaiting means the call is not waiting for approval.
	ErrNotWaiting = errors.New("the tool call is not waiting for approval")
	// ErrAnswered means the call has its answer already.
	ErrAnswered = errors.New("the tool call was answered already")
)

// ApprovalMessage is what the control channel carries when call callID was
// answered.
func ApprovalMessage(callID string) string { return approvalPrefix + callID }

// approvalPrefix starts an approval's control message.
const approvalPrefix = "approval:"

// ApprovalOf returns the call id of a control message about an approval.
func ApprovalOf(msg []byte) (callID string, ok bool) {
	if len(msg) > len(approvalPrefix) && string(msg[:len(approvalPrefix)]) == approvalPrefix {
		return string(msg[len(approvalPrefix):]), true
	}
	return "", false
}

func waitField(callID string) string   { return "wait:" + callID }
func answerField(callID string) string { return "answer:" + callID }

// answerScript records the first answer to a waiting call and tells the
// worker. KEYS: meta. ARGV: wait field, answer field, answer, control
// channel, control message, publish command. Returns 0, or -1 gone, -3
// ended, -4 not waiting, -5 answered already.
var answerScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'status', ARGV[1])
if not m[1] then return -1 end
if m[1] ~= 'streaming' then return -3 end
if not m[2] then return -4 end
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 0 then return -5 end
redis.call(ARGV[6], ARGV[4], ARGV[5])
return 0
`)

// Answer records answer (AnswerApproved, AnswerDenied or AnswerExpired)
// for tool call callID of stream streamID, if it is the first. It returns
// ErrGone, ErrEnded, ErrNotWaiting or ErrAnswered when it is not recorded.
func (l *ChunkLog) Answer(ctx context.Context, streamID, callID, answer string) error {
	v, err := answerScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID)},
		[]string{waitField(callID), answerField(callID), answer, l.keys.ControlChannel(streamID),
			ApprovalMessage(callID), l.publish}).AsInt64()
	if err != nil {
		return fmt.Errorf("answer tool call %s of %s: %w", callID, streamID, err)
	}
	switch v {
	case -4:
		return ErrNotWaiting
	case -5:
		return ErrAnswered
	}
	return scriptResult(v)
}

// Approval is the state of a tool call that needs approval.
type Approval struct {
	// Waiting: the call was marked waiting, Since then.
	Waiting bool
	Since   time.Time
	// Answer is the answer recorded, "" for none yet.
	Answer string
}

// Approval reads the state of tool call callID of stream streamID.
func (l *ChunkLog) Approval(ctx context.Context, streamID, callID string) (Approval, error) {
	v, err := l.client.Do(ctx, l.client.B().Hmget().Key(l.keys.Meta(streamID)).
		Field(waitField(callID), answerField(callID)).Build()).ToArray()
	if err != nil || len(v) != 2 {
		return Approval{}, fmt.Errorf("read approval %s of %s: %w", callID, streamID, err)
	}
	var a Approval
	if s, err := v[0].ToString(); err == nil {
		ms, _ := strconv.ParseInt(s, 10, 64)
		a.Waiting, a.Since = true, time.UnixMilli(ms)
	}
	a.Answer, _ = v[1].ToString()
	return a, nil
}
