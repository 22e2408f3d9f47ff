// The client against a real chatstream node (integration/jsclient_test.go
// starts one on the demo model and sets CHATSTREAM_URL): node --test test/
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { ChatClient, ChatError } from "../src/index.js";

const URL = process.env.CHATSTREAM_URL;
if (!URL) throw new Error("CHATSTREAM_URL is not set: run through `make test` (integration/jsclient_test.go)");

/** token gets a dev token for user. */
async function token(user) {
  const res = await fetch(URL + "/v1/auth/dev-token", { method: "POST", body: JSON.stringify({ user }), headers: { "Content-Type": "application/json" } });
  assert.equal(res.status, 200);
  return (await res.json()).token;
}

/** demo makes the demo model answer with exactly n chunks at rate a second (0: at once). */
const demo = (n, rate, q) => `/demo tokens=${n} rate=${rate}\n${q}`;

/** stored reads the stored message id of conversation conv once it ended. */
async function stored(client, conv, id) {
  for (let i = 0; i < 300; i++) {
    const c = await client.getConversation(conv);
    const m = c.messages.find((x) => x.id === id);
    if (m && !["pending", "streaming"].includes(m.status)) return m;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("message " + id + " never ended");
}

/** collect reads a stream to its end, checking indexes: from, no hole, no repeat. */
async function collect(stream, from = 0) {
  const indexes = [];
  let done;
  for await (const ev of stream) {
    if (ev.type === "part") {
      assert.equal(ev.index, from + indexes.length, "chunk indexes run without a hole or repeat");
      indexes.push(ev.index);
    } else if (ev.type === "done") done = ev;
  }
  return { indexes, done, text: stream.text, parts: stream.parts };
}

test("exactly once across forced disconnects", async () => {
  const client = new ChatClient({ url: URL, token: await token("js-drops"), WebSocket, backoffBase: 20, backoffCap: 100 });
  try {
    const conv = await client.createConversation("drops");
    const turn = await client.send(conv.id, demo(300, 150, "drop me"));
    // Kill the socket at random points while the answer streams.
    let drops = 0;
    const killer = setInterval(() => {
      if (Math.random() < 0.5) {
        client.dropSocket();
        drops++;
      }
    }, 60);
    const got = await collect(turn.stream);
    clearInterval(killer);
    assert.ok(drops >= 3, `only ${drops} drops`);
    assert.equal(got.done.status, "complete");
    assert.equal(got.indexes.length, 300);
    assert.equal(got.done.lastIndex, 299);
    const m = await stored(client, conv.id, turn.streamId);
    assert.equal(got.text, m.content);
    // A drop while reconnecting closes nothing: between 2 and drops+1 sockets.
    assert.ok(client.socket.opened >= 2 && client.socket.opened <= drops + 1, `${client.socket.opened} sockets for ${drops} drops`);
  } finally {
    client.close();
  }
});

test("one socket for every stream and watch", async () => {
  const client = new ChatClient({ url: URL, token: await token("js-shared"), WebSocket });
  try {
    const events = [];
    const turns = [];
    for (let i = 0; i < 3; i++) {
      const conv = await client.createConversation("shared " + i);
      client.watch(conv.id, { onMessage: (m) => events.push(m.status) });
      turns.push(await client.send(conv.id, demo(20, 0, "q" + i)));
    }
    // A second follower of the first stream, from its start, on the same socket.
    const again = await collect(client.follow(turns[0].streamId));
    const results = await Promise.all(turns.map((t) => collect(t.stream)));
    for (const r of results) assert.equal(r.done.status, "complete");
    assert.equal(again.indexes.length, 20);
    assert.equal(client.socket.opened, 1);
    assert.equal(client.transport, "websocket");
  } finally {
    client.close();
  }
});

test("typed parts: reasoning, a tool call and its result, text", async () => {
  const client = new ChatClient({ url: URL, token: await token("js-parts"), WebSocket });
  try {
    const conv = await client.createConversation("parts");
    const turn = await client.send(conv.id, "/demo think=6 tool=calculator\nWhat is 6 * 7?");
    const got = await collect(turn.stream);
    assert.deepEqual(got.parts.map((p) => p.type), ["reasoning", "tool_call", "tool_result", "text"]);
    const [, call, result] = got.parts;
    assert.equal(call.name, "calculator");
    assert.deepEqual(JSON.parse(call.arguments), { expression: "6 * 7" });
    assert.equal(result.output, "42");
    const m = await stored(client, conv.id, turn.streamId);
    assert.deepEqual(got.parts, m.parts, "the parts streamed are the parts stored");
  } finally {
    client.close();
  }
});

test("falls back to SSE when WebSockets fail, and resumes there", async () => {
  // A WebSocket that never connects, as behind a proxy that breaks them.
  class Broken {
    constructor() {
      setTimeout(() => this.onclose?.({ code: 1006 }), 5);
    }
    close() {}
  }
  const client = new ChatClient({ url: URL, token: await token("js-sse"), WebSocket: Broken, backoffBase: 10, backoffCap: 20 });
  try {
    const conv = await client.createConversation("sse");
    const events = [];
    client.watch(conv.id, { onMessage: (m) => events.push(m.id) });
    const turn = await client.send(conv.id, demo(40, 200, "over SSE"));
    assert.equal(client.transport, "sse");
    const got = await collect(turn.stream);
    assert.equal(got.done.status, "complete");
    assert.equal(got.indexes.length, 40);
    const m = await stored(client, conv.id, turn.streamId);
    assert.equal(got.text, m.content);
    // A follow from the middle resumes after the index given.
    const tail = await collect(client.follow(turn.streamId, { lastIndex: 29 }), 30);
    assert.equal(tail.indexes.length, 10);
    // Regenerate and edit over HTTP, followed over SSE.
    const regen = await client.regenerate(turn.streamId);
    assert.equal(regen.userMessage, undefined);
    assert.equal((await collect(regen.stream)).done.status, "complete");
    assert.ok(events.includes(turn.streamId), "the watch over SSE saw the answer");
  } finally {
    client.close();
  }
});

test("errors are typed", async () => {
  const client = new ChatClient({ url: URL, token: await token("js-errors"), WebSocket });
  try {
    await assert.rejects(client.getConversation("00000000-0000-4000-8000-000000000000"), (e) => e instanceof ChatError && e.code === "not_found" && e.status === 404);
    const conv = await client.createConversation("busy");
    const first = await client.send(conv.id, demo(200, 50, "long"));
    await assert.rejects(client.send(conv.id, "again"), (e) => e instanceof ChatError && e.code === "conflict");
    await client.cancel(first.streamId);
    assert.equal((await first.stream.result()).status, "cancelled");
  } finally {
    client.close();
  }
});
