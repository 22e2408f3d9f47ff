package llm

import (
	"encoding/json"
	"strings"
	"unicode"
)

// demoSep separates the paragraphs of a demo text.
const demoSep = "\n\n"

// fence opens and closes Markdown code blocks (raw strings cannot hold it).
const fence = "```"

// demoSubject is one canned topic of the demo model.
type demoSubject struct {
	// name names the topic in the text: "Redis", "resuming".
	name string
	// keywords pick the topic: lower-case words of the question, matched
	// whole; "pub/sub" or "server-sent" match those words in a row.
	keywords []string
	// answer is the natural answer after the quoted question: Markdown with
	// one code block, 80 to 120 words. {topic} stands for a few words of the
	// question, {name} for name.
	answer string
	// brief is the sentence, lower case first, that mentions the topic when
	// it is the second best match of a question.
	brief string
	// more are the paragraphs that continue a longer answer, each distinct.
	more []string
}

// demoSubjects are the demo's topics, in the order that breaks ties; the
// last, without keywords, answers the questions that match none.
var demoSubjects = [...]demoSubject{
	{
		name:     "streaming",
		keywords: []string{"stream", "streams", "streaming", "streamed", "token", "tokens", "sse", "server-sent", "eventsource"},
		answer: `## Streaming an answer as it is written

Here is the short version for **{topic}**: send each piece of the answer the moment the model produces it, instead of waiting for the whole text.

1. The model emits **deltas**, a word or a few characters each.
2. The server numbers every delta and flushes it at once.
3. The client appends the deltas in order and renders the Markdown as it grows.

Server-Sent Events carry them over one long HTTP response:

` + fence + `sh
curl -N -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:8080/v1/streams/$STREAM_ID/events"
` + fence + `

**In short:** number every delta, flush after each one, and let a reader that drops come back with the last number it holds.`,
		brief: "number every delta and flush it at once, so a reader watches the answer grow and can resume from its last number.",
		more: []string{
			"Buffering is the usual enemy. A proxy, a gzip layer or a framework that collects the response turns a stream into one late reply, so switch buffering off on the streaming route (nginx honours `X-Accel-Buffering: no`) and flush after every write.",
			"Keep the deltas small and the frames cheap. Encoding a frame once and handing the same bytes to every reader saves most of the work when many people watch one answer, and a comment line every fifteen seconds keeps idle proxies from closing the response.",
			"Decide what ends a stream. A final frame with a status (complete, cancelled or failed) and the last index lets a client tell a finished answer from a dropped connection, which the end of the response alone cannot.",
		},
	},
	{
		name:     "Redis",
		keywords: []string{"redis", "pub/sub", "pubsub", "cache", "caches", "caching", "cached"},
		answer: `## Redis for live answers

For **{topic}**, Redis plays two parts at once:

- **A log:** append every chunk of an answer to a list, so anyone can read it from any position.
- **A bus:** publish the same chunk on a channel, so every node hears it the moment it exists.

Do both in one atomic script, with the position inside the message:

` + fence + `lua
local n = redis.call("RPUSH", KEYS[1], ARGV[1])
redis.call("PUBLISH", KEYS[2], (n - 1) .. ":" .. ARGV[1])
return n - 1
` + fence + `

**Keep in mind:** pub/sub has no memory and no back-pressure. A subscriber that falls behind is dropped, and whatever was published meanwhile is gone, so readers catch up from the list.`,
		brief: "append each chunk to a list and publish it in the same round trip, so a late reader catches up from the list.",
		more: []string{
			"Give every key of an answer the same expiry, set when the answer ends, so the log of a finished stream stays long enough for a late reader and then disappears on its own. Memory then follows the live answers, not the history.",
			"Hold one pub/sub connection per node, not one per reader, and never block in its message handler: it runs on the connection's reader, so a slow handler stalls every channel behind it. Hand each message off and count what you drop.",
			"For caching the same rules apply in miniature: a key per thing, an expiry on every key, and a plan for the moment the cache is empty. A cache that must be warm for the system to work is a database without the guarantees.",
		},
	},
	{
		name:     "Go",
		keywords: []string{"go", "golang", "goroutine", "goroutines", "channel", "channels"},
		answer: `## Goroutines and channels in Go

Here is how I would think about **{topic}**:

1. A **goroutine** is a function running concurrently, started with ` + "`go f()`" + `. It is cheap, but it needs an owner that can stop it and wait for it.
2. A **channel** passes values between goroutines and synchronises them.
3. ` + "`select`" + ` waits on several channels at once, a context's ` + "`Done()`" + ` included.

` + fence + `go
results := make(chan string) // unbuffered: each send waits for a reader
go func() {
	defer close(results)
	for _, q := range questions {
		results <- answer(q)
	}
}()
for r := range results {
	fmt.Println(r)
}
` + fence + `

**In short:** share memory by communicating, and give every goroutine a clear way to end.`,
		brief: "a goroutine per stream, with an owner that stops it, and a channel to hand each delta on keep the code small.",
		more: []string{
			"Every `go` statement deserves a named owner: a struct whose `Close` stops the goroutine and waits for it, usually with a `sync.WaitGroup`. Leaked goroutines are the memory leaks of Go, and a test with goleak finds them before production does.",
			"Size channel buffers on purpose and write the reason next to them. An unbuffered channel is a handshake; a buffer of one decouples a single step; a large buffer only hides a slow consumer until the day it fills.",
			"Pass a `context.Context` first to anything that can block, and check it in loops. Cancellation then flows from the request down to the last goroutine, and shutting down becomes a matter of cancelling one context and waiting.",
		},
	},
	{
		name:     "resuming",
		keywords: []string{"resume", "resumes", "resuming", "resumed", "reconnect", "reconnects", "reconnecting", "drop", "drops", "dropped", "offline", "exactly-once"},
		answer: `## Resuming a dropped stream

The trick for **{topic}** is that the client, not the server, remembers where it was:

1. Number every chunk: 0, 1, 2 and so on, with no holes.
2. The client keeps the index of the last chunk it rendered.
3. On reconnect it asks for everything after that index, then follows live again.

` + fence + `json
{"type": "subscribe", "stream_id": "s1", "last_index": 41}
` + fence + `

The server replays chunks 42 onwards from its log, then switches the socket to live delivery, so the client gets each chunk **exactly once**, in order.

**Watch out for** the gap between reading history and going live: subscribe first, buffer, read the history, merge by index, and only then stop buffering.`,
		brief: "keep the index of the last chunk a client holds, so after a drop it asks for what follows and gets each chunk exactly once.",
		more: []string{
			"A resume must work after the answer has ended, too. Keep the log of a finished stream for a while, and once it has expired answer from the database with the whole text, never by generating the answer a second time.",
			"When the history cannot continue the client's sequence without a gap, send one snapshot instead: the whole text up to an index, which replaces what the client holds. The chunks after that index then follow as usual.",
			"Test it the way users break it: reload mid-answer, switch the network off and on, put the laptop to sleep. Each time the text on screen must equal the stored message, with no chunk missing and none twice.",
		},
	},
	{
		name:     "WebSockets",
		keywords: []string{"websocket", "websockets", "socket", "sockets", "tab", "tabs"},
		answer: `## WebSockets, one socket per tab

For **{topic}**, a WebSocket gives each tab one long connection that carries frames both ways:

- **One writer per socket:** a single goroutine owns the writes, each under a timeout.
- **A bounded queue:** a client that cannot keep up is closed, and resumes later.
- **Subscriptions by stream:** a tab says which answer it follows, and from which index.

` + fence + `js
const ws = new WebSocket("ws://127.0.0.1:8080/v1/ws?access_token=" + token);
ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", stream_id: id, last_index: last }));
ws.onmessage = (e) => render(JSON.parse(e.data));
` + fence + `

**In short:** keep the server side boring, and let every tab recover on its own by resuming from its last index.`,
		brief: "one socket per tab with a bounded queue; a tab that falls behind is closed and resumes from its last index.",
		more: []string{
			"Keep reading from every socket even when the client never sends anything: pings, pongs and close frames are only handled while someone reads. One reader per socket, started with the socket and ended by it.",
			"Close slow clients rather than buffering for them. With status 1013 the client knows to try again, and because it resumes from its last index, closing a socket loses nothing but a moment.",
			"Two tabs on the same conversation are simply two subscribers of the same stream. Fan-out encodes each frame once and hands the same bytes to every socket, so the hundredth tab costs little more than the first.",
		},
	},
	{
		name:     "Postgres",
		keywords: []string{"postgres", "postgresql", "sql", "database", "databases"},
		answer: `## Postgres as the record

For **{topic}**, let Postgres keep what must last and nothing that flickers:

1. Insert the message row when the message is created, with status streaming.
2. Stream the chunks through something faster, such as a Redis list.
3. Write the final text and status once, when the generation ends.

` + fence + `sql
UPDATE messages
SET content = $2, status = 'complete', finished_at = now()
WHERE id = $1 AND status = 'streaming';
` + fence + `

The status guard makes the final write idempotent: a second worker finishing the same message changes nothing.

**In short:** one insert, one update and no polling, so the database stays quiet while answers stream.`,
		brief: "insert a message row when it starts and write its final text once when it ends; nothing polls the database meanwhile.",
		more: []string{
			"Run migrations at start-up from files embedded in the binary, under an advisory lock, so two nodes starting together do not race. Every migration should be safe to run against the previous version of the code.",
			"Map errors by their code, not their message: a unique violation is 23505 whatever the server's language. Turn it into a conflict for the client, and log the rest with the query's context.",
			"Ping the pool at start-up, so a wrong address fails in one line instead of at the first request, and size the pool for the workers that write, not for the readers, who mostly wait on Redis.",
		},
	},
	{
		name:     "testing",
		keywords: []string{"test", "tests", "testing", "tested"},
		answer: `## Testing a streaming system

For **{topic}**, test the behaviour users see, against real services:

- **End to end:** start the real binary on a free port and dial real sockets.
- **Exactly once:** check that every client got every chunk once, in order.
- **Failures:** kill a worker, drop a socket, restart Redis, then check again.

` + fence + `go
func TestStream_Resume(t *testing.T) {
	got := follow(t, streamID, 41) // resume after chunk 41
	if want := textAfter(t, messageID, 41); got != want {
		t.Fatalf("resumed %q, want %q", got, want)
	}
}
` + fence + `

**In short:** run everything with the race detector, log a seed for every randomised test, and prove speed with benchmarks rather than timed assertions.`,
		brief: "test it end to end against real services, and check that every client got every chunk exactly once, in order.",
		more: []string{
			"Prefer table tests for pure logic and black-box tests for packages: a test that uses only the exported API survives refactoring and documents how the code is meant to be used.",
			"Make random tests replayable: draw a seed, log it, and read it from an environment variable when set. A failure then comes with the command that reproduces it, instead of a shrug.",
			"Fake as little as possible. The model is the one thing worth faking, with a small server that speaks its wire protocol, so the real client code runs in every test.",
		},
	},
	{
		name: "your project",
		answer: `## A quick take

I have no canned answer on that exact subject, but here is how I would approach **{topic}**:

1. Start with the smallest version that works, and measure it.
2. Keep each part focused: one function, one responsibility.
3. Write a test before you optimise anything.
4. Add caching, concurrency or configuration only when the numbers ask for it.

A small Python sketch of the idea:

` + fence + `python
def summarize(values):
    total = sum(values)
    return {"count": len(values), "mean": total / max(len(values), 1)}
` + fence + `

**In short:** begin small, verify every step, and grow the solution gradually. Ask me about streaming, Redis, Go, resuming, WebSockets, Postgres or testing for a more specific answer.`,
		more: []string{
			"Write down what you expect before you run anything. A prediction turns every experiment into a test, and the surprises are where the real learning is.",
			"Change one thing at a time, and keep each experiment in version control, so that any step can be undone and compared with the one before.",
			"When it works, explain it to someone else in five sentences. Whatever you cannot explain simply is the part to look at again.",
		},
	},
}

// demoFallback is the index of the topic of questions that match none.
const demoFallback = len(demoSubjects) - 1

// The sentences of the numbered notes that continue an answer past its
// topics' paragraphs: note k has demoNoteOpen[k%7], demoNoteMiddle[k%8] and
// demoNoteClose[k%9], so consecutive notes differ in every sentence and
// their number tells them apart. {name} stands for the topic's name.
var (
	demoNoteOpen = [...]string{
		"For {name}, measure before you change anything.",
		"Start from the failure you fear most with {name}, and make it happen on purpose.",
		"Write down what {name} must guarantee here, in one sentence a newcomer understands.",
		"Keep the first version of anything touching {name} small enough to read in one sitting.",
		"Put a number on what good enough means for {name} before tuning it.",
		"With {name}, ask what happens when the network is slow rather than down.",
		"Give every moving part around {name} an owner with a name.",
	}
	demoNoteMiddle = [...]string{
		"A benchmark run before and after a change settles most arguments.",
		"Logs that say why something happened save more time than logs that say what.",
		"Every timeout deserves a comment on where its value came from.",
		"A limit that nobody has hit yet is still worth a test.",
		"Defaults should be safe in production and convenient on a laptop.",
		"The simplest design that survives a restart usually survives the rest.",
		"Retries need a budget, or they turn a small outage into a large one.",
		"Metrics are cheapest when they are counted where the work happens.",
	}
	demoNoteClose = [...]string{
		"Then write the test that would have caught the last bug.",
		"Then explain the result to a colleague in two sentences.",
		"Then delete whatever the numbers showed to be unnecessary.",
		"Then make the failure visible on a dashboard before users see it.",
		"Then try it again under twice the load.",
		"Then record the decision where the next person will look for it.",
		"Then check that shutting down is as clean as starting up.",
		"Then see whether the change still holds with ten times the data.",
		"Then keep the case as a regression test.",
	}
)

// demoTopic returns the first few words of question, stripped of anything
// but letters, digits, hyphens and apostrophes so that they cannot break the
// Markdown around them, or "your question" if none remain.
func demoTopic(question string) string {
	const maxWords, maxBytes = 6, 60
	var b strings.Builder
	keep := func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '\'' {
			return r
		}
		return -1
	}
	for pos, words := 0, 0; pos < len(question) && words < maxWords; {
		end := nextWord(question, pos)
		w := strings.Map(keep, question[pos:end])
		pos = end
		if w == "" {
			continue
		}
		if b.Len()+1+len(w) > maxBytes {
			break
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		words++
	}
	if b.Len() == 0 {
		return "your question"
	}
	return b.String()
}

// fnv1a is the 32-bit FNV-1a hash of s.
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// demoReasoning is what the demo "thinks" about the question of t before
// answering.
func demoReasoning(t *demoText) string {
	s := &demoSubjects[t.subject]
	about := " None of my topics fits, so a general answer will do."
	if t.subject != demoFallback {
		about = " This is a question on " + s.name + "."
		if t.second >= 0 {
			about = " This is a question on " + s.name + ", with a side of " + demoSubjects[t.second].name + "."
		}
	}
	return " The user asks about " + t.topic + "." + about +
		" I should quote the question, give the essentials first, then one example in a code block." +
		" Which parts matter most for " + s.name + "? Probably the simplest working version, and how to check it." +
		" I will keep the answer short and concrete."
}

// demoArguments are the arguments the demo model calls a tool with.
func demoArguments(tool, question string) string {
	switch tool {
	case "calculator":
		expr := ""
		for _, r := range question {
			if strings.ContainsRune("0123456789+-*/(). ", r) {
				expr += string(r)
			}
		}
		if strings.TrimSpace(expr) == "" || !strings.ContainsAny(expr, "0123456789") {
			expr = "6 * 7"
		}
		b, _ := json.Marshal(map[string]string{"expression": strings.TrimSpace(expr)})
		return string(b)
	case "clock":
		return `{"timezone":"UTC"}`
	}
	b, _ := json.Marshal(map[string]string{"text": demoTopic(question)})
	return string(b)
}

// demoSafe is s without the characters that would break the Markdown
// around it, at most 200 bytes.
func demoSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '*' || r == '`' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.TrimSpace(s)
}
