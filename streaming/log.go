package streaming

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Errors of the chunk log's writers.
var (
	// ErrFenced means the writer's epoch is no longer the stream's: another
	// worker (or a reaper) took the job over, and this one must stop.
	ErrFenced = errors.New("stream is owned by another worker")
	// ErrGone means the stream's meta does not exist (never created, or expired).
	ErrGone = errors.New("stream does not exist in redis")
	// ErrEnded means the stream already ended.
	ErrEnded = errors.New("stream already ended")
)

// ChunkLog is the per-stream chunk log in Redis: a list of chunk frames and a meta
// hash, with the stream's pub/sub channel. Every write checks the writer's
// epoch inside the same script, so a worker that lost its job can write
// nothing more.
type ChunkLog struct {
	client  rueidis.Client
	keys    Keys
	ttl     time.Duration
	publish string // PUBLISH, or SPUBLISH on a Redis Cluster
	// openTTLArg is openTTL in milliseconds as the append script takes it,
	// formatted once rather than per chunk.
	openTTLArg string
	// compactAfter is how long an ended stream's chunks stay (see
	// CompactAfter); 0 keeps them for the TTL.
	compactAfter time.Duration
}

// CompactAfter makes the log compact ended streams: d after the end their
// chunks go, and the parts kept in the meta stand in for them (a resume is
// answered with a snapshot of them). Resumes right after the end, the
// common case, still get chunks. It returns l.
func (l *ChunkLog) CompactAfter(d time.Duration) *ChunkLog {
	l.compactAfter = d
	return l
}

// NewChunkLog returns the chunk log; ttl is how long a stream's keys live after it
// ends (STREAM_TTL).
func NewChunkLog(client rueidis.Client, keys Keys, ttl time.Duration) *ChunkLog {
	l := &ChunkLog{client: client, keys: keys, ttl: ttl, publish: publishCommand(client)}
	l.openTTLArg = ms(l.openTTL())
	return l
}

// publishCommand is how the scripts publish: a Redis Cluster's hub listens
// with sharded pub/sub, which only SPUBLISH reaches (and a stream's channel
// shares its keys' slot, as a script needs).
func publishCommand(client rueidis.Client) string {
	if sharded(client) {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// sharded reports whether client talks to a Redis Cluster, where channels
// are sharded: published with SPUBLISH, followed with SSUBSCRIBE.
func sharded(client rueidis.Client) bool { return client.Mode() == rueidis.ClientModeCluster }

// Keys returns the key names the log uses.
func (l *ChunkLog) Keys() Keys { return l.keys }

// Meta is the state of a stream as its meta hash holds it.
type Meta struct {
	Exists         bool
	Status         chatstream.Status
	User           string
	ConversationID string
	// Epoch counts the claims of the job; 0 until a worker took it.
	Epoch int64
	// N is the number of chunks appended; the last index is N-1.
	N int64
	// Cancel is set once a cancel was requested.
	Cancel bool
	// Final is the status a finishing writer recorded before writing
	// Postgres, so that a reaper can finish the flush as it meant to.
	Final   chatstream.Status
	Failure *chatstream.Failure
	// FinishReason is the model's, once the stream ended. Usage is the
	// generation's, summed over its model calls so far.
	FinishReason string
	Usage        *chatstream.Usage
	// Attempts counts the claims, to bound how often a job is run again.
	Attempts int64
	// T0 is the time of the stream's first chunk, in Unix microseconds:
	// its entries hold their times less T0.
	T0 int64
}

// LastIndex is the index of the last chunk, -1 if none.
func (m Meta) LastIndex() int64 { return m.N - 1 }

// DoneFrame is the done frame of an ended stream as its meta tells it.
func (m Meta) DoneFrame(streamID string) []byte {
	return protocol.Done{Type: protocol.TypeDone, StreamID: streamID, MessageID: streamID, Status: m.Status, LastIndex: m.N - 1,
		Error: m.Failure, FinishReason: m.FinishReason, Usage: m.Usage}.Frame()
}

func parseMeta(h map[string]string) Meta {
	if len(h) == 0 {
		return Meta{}
	}
	m := Meta{
		Exists:         true,
		Status:         chatstream.Status(h["status"]),
		User:           h["user"],
		ConversationID: h["conv"],
		Cancel:         h["cancel"] == "1",
		Final:          chatstream.Status(h["final"]),
		FinishReason:   h["reason"],
	}
	m.Epoch, _ = strconv.ParseInt(h["epoch"], 10, 64)
	m.N, _ = strconv.ParseInt(h["n"], 10, 64)
	m.Attempts, _ = strconv.ParseInt(h["attempts"], 10, 64)
	m.T0, _ = strconv.ParseInt(h["t0"], 10, 64)
	if u := h["usage"]; u != "" {
		var usage chatstream.Usage
		if json.Unmarshal([]byte(u), &usage) == nil {
			m.Usage = &usage
		}
	}
	if e := h["error"]; e != "" {
		var f chatstream.Failure
		if json.Unmarshal([]byte(e), &f) == nil {
			m.Failure = &f
		}
	}
	return m
}

// openTTL bounds the life of a stream that never ends (every worker and
// reaper gone): its keys expire this long after the last write.
func (l *ChunkLog) openTTL() time.Duration { return l.ttl + 24*time.Hour }

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// Create writes the meta of a new stream.
func (l *ChunkLog) Create(ctx context.Context, streamID, userID, convID string) error {
	meta := l.keys.Meta(streamID)
	cmds := rueidis.Commands{
		l.client.B().Hset().Key(meta).FieldValue().
			FieldValue("status", string(chatstream.StatusStreaming)).FieldValue("user", userID).
			FieldValue("conv", convID).FieldValue("epoch", "0").FieldValue("n", "0").Build(),
		l.client.B().Pexpire().Key(meta).Milliseconds(l.openTTL().Milliseconds()).Build(),
	}
	for _, r := range l.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("create stream %s: %w", streamID, err)
		}
	}
	return nil
}

// claimScript bumps the epoch of an open stream, fencing off every earlier
// writer. KEYS: meta. ARGV: owner. Returns {epoch, n, cancel, attempts,
// final, error} or {-1} (gone) or {-2} (ended).
var claimScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'status', 'n', 'cancel', 'final', 'error')
if not m[1] then return {-1} end
if m[1] ~= 'streaming' then return {-2} end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return {epoch, tonumber(m[2]), m[3] == '1' and 1 or 0, attempts, m[4] or '', m[5] or ''}
`)

// Claim makes owner the stream's writer and returns the meta with the new
// epoch, including the final status an earlier writer marked. It returns
// ErrGone or ErrEnded when there is nothing to write.
func (l *ChunkLog) Claim(ctx context.Context, streamID, owner string) (Meta, error) {
	v, err := claimScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID)}, []string{owner}).ToArray()
	if err != nil {
		return Meta{}, fmt.Errorf("claim stream %s: %w", streamID, err)
	}
	if len(v) == 0 {
		return Meta{}, fmt.Errorf("claim stream %s: empty answer", streamID)
	}
	if code, _ := v[0].AsInt64(); code == -1 {
		return Meta{}, ErrGone
	} else if code == -2 {
		return Meta{}, ErrEnded
	}
	if len(v) != 6 {
		return Meta{}, fmt.Errorf("claim stream %s: %d values in the answer", streamID, len(v))
	}
	var ints [4]int64
	for i := range ints {
		if ints[i], err = v[i].AsInt64(); err != nil {
			return Meta{}, fmt.Errorf("claim stream %s: %w", streamID, err)
		}
	}
	final, _ := v[4].ToString()
	failure, _ := v[5].ToString()
	m := Meta{Exists: true, Status: chatstream.StatusStreaming, Epoch: ints[0], N: ints[1], Cancel: ints[2] == 1,
		Attempts: ints[3], Final: chatstream.Status(final)}
	if failure != "" {
		var f chatstream.Failure
		if json.Unmarshal([]byte(failure), &f) == nil {
			m.Failure = &f
		}
	}
	return m, nil
}

// appendScript appends one chunk frame and publishes it, in one round trip.
// The writer says which index it appends: a retry of an append that did
// reach Redis is recognised and not applied twice. The open stream's TTL
// (a day past STREAM_TTL) is set on the first chunk and refreshed every
// 256th: a PEXPIRE pair on every append was a quarter of the script's cost.
// The log stores the chunk as a compact entry (protocol/entry.go: its
// kind, its time less the stream's t0, its payload), built here from
// ARGV 7-9 — t0 is the first such chunk's time — while the whole frame is
// what is published; with no kind the frame itself is stored.
// A tool call that waits for the user's approval is marked waiting in the
// same script (ARGV 10 and 11: the meta field and its value), so that an
// approval is taken from the moment the call's chunk can be seen.
// KEYS: meta, chunks. ARGV: epoch, index, frame, channel, ttl ms, publish
// command, entry kind, ts, payload[, field, value]. Returns {0, cancel}
// appended, {1, cancel} already appended, {-1} gone, {-2} fenced, {-3}
// ended, {-4, n} the index does not follow.
var appendScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'n', 'status', 'cancel', 't0')
if not m[1] then return {-1} end
if m[1] ~= ARGV[1] then return {-2} end
if m[3] ~= 'streaming' then return {-3} end
local n = tonumber(m[2])
local want = tonumber(ARGV[2])
local cancel = m[4] == '1' and 1 or 0
if want < n then return {1, cancel} end
if want > n then return {-4, n} end
if ARGV[7] ~= '' then
  local t0 = m[5]
  if not t0 then
    t0 = ARGV[8]
    redis.call('HSET', KEYS[1], 'n', n + 1, 't0', t0)
  else
    redis.call('HSET', KEYS[1], 'n', n + 1)
  end
  redis.call('RPUSH', KEYS[2], ARGV[7] .. string.format('%d', tonumber(ARGV[8]) - tonumber(t0)) .. ':' .. ARGV[9])
else
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('HSET', KEYS[1], 'n', n + 1)
end
if ARGV[10] then redis.call('HSETNX', KEYS[1], ARGV[10], ARGV[11]) end
if n % 256 == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call(ARGV[6], ARGV[4], ARGV[3])
return {0, cancel}
`)

// Append appends the chunk frame at index to the stream and publishes it,
// storing the frame itself, as logs did before entries (tests use it to
// write such logs). It reports whether a cancel was requested meanwhile.
// Writers of parts use AppendPart, which stores an entry.
func (l *ChunkLog) Append(ctx context.Context, streamID string, epoch, index int64, frame []byte) (cancel bool, err error) {
	return l.append(ctx, streamID, epoch, index, frame, nil, 0, "", time.Time{})
}

// AppendPart appends the chunk at index — part, at time ts, published as
// frame (protocol.AppendPartChunk of them) — storing its compact entry; a
// tool call that requires approval is marked waiting since ts. It reports
// whether a cancel was requested meanwhile.
func (l *ChunkLog) AppendPart(ctx context.Context, streamID string, epoch, index int64, frame []byte, part chatstream.Part, ts time.Time) (cancel bool, err error) {
	awaiting := ""
	if part.Type == chatstream.PartToolCall && part.RequiresApproval {
		awaiting = part.CallID
	}
	return l.append(ctx, streamID, epoch, index, frame, &part, ts.UnixMicro(), awaiting, ts)
}

func (l *ChunkLog) append(ctx context.Context, streamID string, epoch, index int64, frame []byte,
	part *chatstream.Part, ts int64, awaiting string, since time.Time) (cancel bool, err error) {
	kind, payload := "", ""
	if part != nil {
		k, p := protocol.EntryOf(*part)
		kind, payload = string(k), p
	}
	args := []string{strconv.FormatInt(epoch, 10), strconv.FormatInt(index, 10), rueidis.BinaryString(frame),
		l.keys.Channel(streamID), l.openTTLArg, l.publish, kind, strconv.FormatInt(ts, 10), payload}
	if awaiting != "" {
		args = append(args, waitField(awaiting), strconv.FormatInt(since.UnixMilli(), 10))
	}
	v, err := appendScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID), l.keys.Chunks(streamID)}, args).AsIntSlice()
	if err != nil {
		return false, fmt.Errorf("append chunk %d to %s: %w", index, streamID, err)
	}
	switch v[0] {
	case 0, 1:
		return v[1] == 1, nil
	case -1:
		return false, ErrGone
	case -2:
		return false, ErrFenced
	case -3:
		return false, ErrEnded
	}
	return false, fmt.Errorf("append chunk %d to %s: the log holds %d chunks", index, streamID, v[1])
}

// markFinalScript records the status a writer is about to store.
// KEYS: meta. ARGV: epoch, final status, error json.
var markFinalScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'status')
if not m[1] then return -1 end
if m[1] ~= ARGV[1] then return -2 end
if m[2] ~= 'streaming' then return -3 end
redis.call('HSET', KEYS[1], 'final', ARGV[2], 'error', ARGV[3])
return 0
`)

// MarkFinal records the status the writer is about to write to Postgres. If
// the writer dies before Finish, the reaper finishes with this status.
func (l *ChunkLog) MarkFinal(ctx context.Context, streamID string, epoch int64, status chatstream.Status, failure *chatstream.Failure) error {
	v, err := markFinalScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID)},
		[]string{strconv.FormatInt(epoch, 10), string(status), failureJSON(failure)}).AsInt64()
	if err != nil {
		return fmt.Errorf("mark final %s: %w", streamID, err)
	}
	return scriptResult(v)
}

// finishScript ends the stream: status, done frame published, keys set to
// expire; with parts (ARGV 10), the stream's compacted value, kept in a key
// of its own for the TTL, and the chunks set to expire after ARGV 11 ms
// instead. KEYS: meta, chunks, parts. ARGV: epoch, status, error json, done
// frame, channel, ttl ms, publish command, finish reason, usage json, parts
// json, chunks ttl ms.
var finishScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'status')
if not m[1] then return -1 end
if m[1] ~= ARGV[1] then return -2 end
if m[2] ~= 'streaming' then return -3 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'final', ARGV[2], 'error', ARGV[3], 'reason', ARGV[8], 'usage', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if ARGV[10] ~= '' then
  redis.call('SET', KEYS[3], ARGV[10], 'PX', ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[11])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
redis.call(ARGV[7], ARGV[5], ARGV[4])
return 0
`)

// End is how a stream ended, as its done frame tells it.
type End struct {
	Status  chatstream.Status
	Failure *chatstream.Failure
	// FinishReason is the model's ("stop", "length", …; empty for none).
	FinishReason string
	// Usage is the generation's token usage, nil if the model told none.
	Usage *chatstream.Usage
	// Parts are the answer's parts, its n chunks joined: with CompactAfter
	// they are kept as the stream's compacted value. Nil: not compacted.
	Parts []chatstream.Part
}

// Finish ends the stream after n chunks: it publishes the done frame and
// lets the stream's keys expire after the TTL.
func (l *ChunkLog) Finish(ctx context.Context, streamID string, epoch int64, n int64, end End) error {
	done := protocol.Done{Type: protocol.TypeDone, StreamID: streamID, MessageID: streamID, Status: end.Status, LastIndex: n - 1,
		Error: end.Failure, FinishReason: end.FinishReason, Usage: end.Usage}.Frame()
	usage := ""
	if end.Usage != nil {
		b, _ := json.Marshal(end.Usage)
		usage = string(b)
	}
	parts, chunksTTL := "", l.ttl
	if l.compactAfter > 0 && end.Parts != nil {
		b, _ := json.Marshal(end.Parts)
		parts, chunksTTL = string(b), min(l.compactAfter, l.ttl)
	}
	v, err := finishScript.Exec(ctx, l.client,
		[]string{l.keys.Meta(streamID), l.keys.Chunks(streamID), l.keys.Parts(streamID)},
		[]string{strconv.FormatInt(epoch, 10), string(end.Status), failureJSON(end.Failure), rueidis.BinaryString(done),
			l.keys.Channel(streamID), ms(l.ttl), l.publish, end.FinishReason, usage, parts, ms(chunksTTL)}).AsInt64()
	if err != nil {
		return fmt.Errorf("finish stream %s: %w", streamID, err)
	}
	return scriptResult(v)
}

// saveUsageScript records the usage of a generation's model calls so far.
// KEYS: meta. ARGV: epoch, usage json.
var saveUsageScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'status')
if not m[1] then return -1 end
if m[1] ~= ARGV[1] then return -2 end
if m[2] ~= 'streaming' then return -3 end
redis.call('HSET', KEYS[1], 'usage', ARGV[2])
return 0
`)

// SaveUsage records the token usage of the generation's model calls so
// far (Meta.Usage), so that a worker that takes the job over at a tool
// boundary goes on counting from it.
func (l *ChunkLog) SaveUsage(ctx context.Context, streamID string, epoch int64, usage chatstream.Usage) error {
	b, _ := json.Marshal(usage)
	v, err := saveUsageScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID)},
		[]string{strconv.FormatInt(epoch, 10), string(b)}).AsInt64()
	if err != nil {
		return fmt.Errorf("save usage of %s: %w", streamID, err)
	}
	return scriptResult(v)
}

// cancelScript flags a stream as cancelled and tells its worker.
// KEYS: meta. ARGV: cancel channel, publish command. Returns {1} while a writer holds the
// stream, {0} while none does, {-1} gone, {-3} ended.
var cancelScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not m[1] then return {-1} end
if m[1] ~= 'streaming' then return {-3} end
redis.call('HSET', KEYS[1], 'cancel', '1')
redis.call(ARGV[2], ARGV[1], 'cancel')
return {m[2] and 1 or 0}
`)

// Cancel requests that the stream stop. held reports whether a writer holds
// the stream and will hear the cancel; when none does (the job waits in the
// queue), the caller ends the stream itself. It returns ErrGone or ErrEnded
// when there is nothing to stop.
func (l *ChunkLog) Cancel(ctx context.Context, streamID string) (held bool, err error) {
	v, err := cancelScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID)},
		[]string{l.keys.ControlChannel(streamID), l.publish}).AsIntSlice()
	if err != nil {
		return false, fmt.Errorf("cancel stream %s: %w", streamID, err)
	}
	switch v[0] {
	case -1:
		return false, ErrGone
	case -3:
		return false, ErrEnded
	}
	return v[0] == 1, nil
}

// releaseScript marks a stream as held by no writer. KEYS: meta. ARGV: epoch.
var releaseScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'status')
if not m[1] then return -1 end
if m[1] ~= ARGV[1] then return -2 end
if m[2] ~= 'streaming' then return -3 end
redis.call('HDEL', KEYS[1], 'owner')
return 0
`)

// Release says that the writer of epoch hands the stream's job back to the
// queue: until a worker claims it again, nobody would hear a cancel, so
// Cancel reports it as not held.
func (l *ChunkLog) Release(ctx context.Context, streamID string, epoch int64) error {
	v, err := releaseScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID)},
		[]string{strconv.FormatInt(epoch, 10)}).AsInt64()
	if err != nil {
		return fmt.Errorf("release stream %s: %w", streamID, err)
	}
	return scriptResult(v)
}

// Meta reads the stream's meta hash.
func (l *ChunkLog) Meta(ctx context.Context, streamID string) (Meta, error) {
	h, err := l.client.Do(ctx, l.client.B().Hgetall().Key(l.keys.Meta(streamID)).Build()).AsStrMap()
	if err != nil {
		return Meta{}, fmt.Errorf("read meta of %s: %w", streamID, err)
	}
	return parseMeta(h), nil
}

// History is what the log holds of a stream from some index on.
type History struct {
	Meta Meta
	// From is the index of Frames[0].
	From int64
	// Frames are the chunk frames from From on, in order.
	Frames [][]byte
}

// Read returns the meta and the chunk frames from index from on, read in one
// round trip (both keys share the stream's slot).
func (l *ChunkLog) Read(ctx context.Context, streamID string, from int64) (History, error) {
	if from < 0 {
		from = 0
	}
	res := l.client.DoMulti(ctx,
		l.client.B().Hgetall().Key(l.keys.Meta(streamID)).Build(),
		l.client.B().Lrange().Key(l.keys.Chunks(streamID)).Start(from).Stop(-1).Build())
	h, err := res[0].AsStrMap()
	if err != nil {
		return History{}, fmt.Errorf("read meta of %s: %w", streamID, err)
	}
	msgs, err := res[1].ToArray()
	if err != nil {
		return History{}, fmt.Errorf("read chunks of %s: %w", streamID, err)
	}
	hist := History{Meta: parseMeta(h), From: from, Frames: make([][]byte, 0, len(msgs))}
	for i, m := range msgs {
		s, err := m.ToString()
		if err != nil {
			return History{}, fmt.Errorf("read chunks of %s: %w", streamID, err)
		}
		f, err := protocol.FrameOfEntry(nil, streamID, from+int64(i), []byte(s), hist.Meta.T0)
		if err != nil {
			return History{}, fmt.Errorf("read chunk %d of %s: %w", from+int64(i), streamID, err)
		}
		hist.Frames = append(hist.Frames, f)
	}
	return hist, nil
}

// Compacted returns the compacted value of an ended stream whose chunks
// are gone: its parts, all of its chunks joined; nil if it has none. Only
// a catch-up that finds the chunks gone reads it.
func (l *ChunkLog) Compacted(ctx context.Context, streamID string) ([]chatstream.Part, error) {
	b, err := l.client.Do(ctx, l.client.B().Get().Key(l.keys.Parts(streamID)).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read the compacted parts of %s: %w", streamID, err)
	}
	var parts []chatstream.Part
	if err := json.Unmarshal(b, &parts); err != nil {
		return nil, fmt.Errorf("read the compacted parts of %s: %w", streamID, err)
	}
	return parts, nil
}

// Parts rebuilds the parts of the stream from its chunks, as stored; it is
// how a reaper recovers the answer of a writer that died. It returns the
// parts and the number of chunks.
func (l *ChunkLog) Parts(ctx context.Context, streamID string) ([]chatstream.Part, int64, error) {
	hist, err := l.Read(ctx, streamID, 0)
	if err != nil {
		return nil, 0, err
	}
	parts, err := protocol.PartsOf(hist.Frames)
	if err != nil {
		return nil, 0, fmt.Errorf("chunks of %s: %w", streamID, err)
	}
	return parts, int64(len(hist.Frames)), nil
}

func scriptResult(v int64) error {
	switch v {
	case -1:
		return ErrGone
	case -2:
		return ErrFenced
	case -3:
		return ErrEnded
	}
	return nil
}

func failureJSON(f *chatstream.Failure) string {
	if f == nil {
		return ""
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// Running reports whether stream streamID is still being generated: its
// meta exists and says it is open.
func (l *ChunkLog) Running(ctx context.Context, streamID string) (bool, error) {
	m, err := l.Meta(ctx, streamID)
	if err != nil {
		return false, err
	}
	return m.Exists && !m.Status.Final(), nil
}

// deleteScript removes a stream whose conversation was deleted: its keys
// go, its worker hears a cancel, and the nodes that follow it get the
// frame that ends their followers. KEYS: meta, chunks, parts. ARGV: control
// channel, stream channel, the ending frame, publish command. Returns 1 if
// the stream was there.
var deleteScript = rueidis.NewLuaScript(`
local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if existed == 1 then
  redis.call(ARGV[4], ARGV[1], 'cancel')
  redis.call(ARGV[4], ARGV[2], ARGV[3])
end
return existed
`)

// Delete removes stream streamID, whose conversation was deleted: its
// chunk log and meta go; a worker generating it stops (its writes find the
// stream gone); every node following it ends its followers with a
// not_found error frame, and drops its copy of the log.
func (l *ChunkLog) Delete(ctx context.Context, streamID string) error {
	frame := protocol.ErrorFrame(streamID, protocol.ErrStreamNotFound.Code, protocol.ErrStreamNotFound.Message)
	err := deleteScript.Exec(ctx, l.client, []string{l.keys.Meta(streamID), l.keys.Chunks(streamID), l.keys.Parts(streamID)},
		[]string{l.keys.ControlChannel(streamID), l.keys.Channel(streamID), rueidis.BinaryString(frame), l.publish}).Error()
	if err != nil {
		return fmt.Errorf("delete stream %s: %w", streamID, err)
	}
	return nil
}

// Missing reports, for each of ids, whether its stream has no meta in
// Redis: for an answer Postgres still holds open, that means the stream is
// lost (Redis lost the data, or it expired), since the meta is written
// before the message commits and outlives its end. One round trip (one
// command per stream, routed to its slot).
func (l *ChunkLog) Missing(ctx context.Context, ids []string) ([]bool, error) {
	cmds := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		cmds[i] = l.client.B().Exists().Key(l.keys.Meta(id)).Build()
	}
	missing := make([]bool, len(ids))
	for i, r := range l.client.DoMulti(ctx, cmds...) {
		n, err := r.AsInt64()
		if err != nil {
			return nil, fmt.Errorf("look up stream %s: %w", ids[i], err)
		}
		missing[i] = n == 0
	}
	return missing, nil
}

// TrySweep takes the sweep of this period for owner, for period; false
// when another node has it.
func (l *ChunkLog) TrySweep(ctx context.Context, owner string, period time.Duration) (bool, error) {
	err := l.client.Do(ctx, l.client.B().Set().Key(l.keys.Sweep()).Value(owner).Nx().Px(period).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	return err == nil, err
}
