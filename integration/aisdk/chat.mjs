// Drives the AI SDK's own client (ai@7.0.173's DefaultChatTransport and
// readUIMessageStream, what useChat runs) against a chatstream node, for
// integration/aisdk_test.go. One JSON object per step on stdout.
//
//   API=http://127.0.0.1:PORT/v1/ai-sdk/chat TOKEN=… CHAT=… node chat.mjs
import { DefaultChatTransport, readUIMessageStream } from "ai";

const { API, TOKEN, CHAT, QUESTION, SLOW_QUESTION } = process.env;
const transport = new DefaultChatTransport({ api: API, headers: { Authorization: `Bearer ${TOKEN}` } });
const out = (step, v) => console.log(JSON.stringify({ step, ...v }));

// read assembles a chunk stream into the final message, with the chunks'
// types and the errors seen; onChunk may stop it.
async function read(stream, onChunk) {
  const chunks = [];
  const errors = [];
  const watched = stream.pipeThrough(new TransformStream({
    transform(c, ctl) {
      chunks.push(c.type);
      ctl.enqueue(c);
      onChunk?.(c);
    },
  }));
  let message;
  try {
    for await (const m of readUIMessageStream({ stream: watched, onError: (e) => errors.push(String(e?.message ?? e)) })) message = m;
  } catch (e) {
    errors.push(String(e?.message ?? e));
  }
  return { message, chunks, errors };
}

const history = [];
const user = (id, text) => ({ id, role: "user", parts: [{ type: "text", text }] });

// 1. A message, its answer streamed whole.
history.push(user("u1aaaaaaaaaaaaaa", QUESTION));
let r = await read(await transport.sendMessages({ chatId: CHAT, messages: history, trigger: "submit-message" }));
out("send", r);
history.push(r.message);

// 2. Another, aborted at its first text; reconnectToStream gives it whole.
history.push(user("u2aaaaaaaaaaaaaa", SLOW_QUESTION));
const ac = new AbortController();
r = await read(await transport.sendMessages({ chatId: CHAT, messages: history, trigger: "submit-message", abortSignal: ac.signal }),
  (c) => { if (c.type === "text-delta") ac.abort(); });
out("aborted", r);
const resumed = await transport.reconnectToStream({ chatId: CHAT });
r = resumed ? await read(resumed) : { none: true };
out("resumed", r);
if (r.message) history.push(r.message);

// 3. Nothing runs now: reconnecting finds nothing (204).
out("after-end", { none: (await transport.reconnectToStream({ chatId: CHAT })) === null });
out("never-used", { none: (await transport.reconnectToStream({ chatId: CHAT + "-never" })) === null });

// 4. Regenerate the last answer.
history.pop();
r = await read(await transport.sendMessages({ chatId: CHAT, messages: history, trigger: "regenerate-message" }));
out("regenerated", r);
