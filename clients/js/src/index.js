// @chatstream/client: a typed client of chatstream. One WebSocket for every
// stream and conversation of a page, reconnecting with jittered backoff and
// resuming each stream from the last index it holds (every chunk exactly
// once); Server-Sent Events over fetch when WebSockets do not get through.
import { StreamSocket } from "./socket.js";
import { SSEFollower, readEvents } from "./sse.js";
import { addPart, partOf, textOf } from "./parts.js";

export { StreamSocket, SSEFollower, readEvents, addPart, partOf, textOf };

/**
 * @typedef {import("./parts.js").Part} Part
 * @typedef {{code: string, message: string}} Failure
 * @typedef {{prompt_tokens: number, completion_tokens: number, total_tokens: number}} Usage
 * @typedef {object} Message
 * @property {string} id
 * @property {string} conversation_id
 * @property {"user" | "assistant"} role
 * @property {string} content
 * @property {"pending" | "streaming" | "complete" | "cancelled" | "failed"} status
 * @property {string} created_at
 * @property {string | null} parent_id
 * @property {string[]} sibling_ids
 * @property {Part[]} parts
 * @property {string} [client_message_id]
 * @property {Failure} [error]
 * @property {string | null} [model]
 * @property {string | null} [finish_reason]
 * @property {Usage | null} [usage]
 * @typedef {{id: string, title: string, created_at: string, current_message_id?: string}} Conversation
 * @typedef {{type: "part", index: number, part: Part}} PartEvent
 * @typedef {{type: "snapshot", lastIndex: number, parts: Part[], content: string}} SnapshotEvent
 * @typedef {{type: "done", status: "complete" | "cancelled" | "failed", lastIndex: number, error?: Failure, usage?: Usage, finishReason?: string}} DoneEvent
 * @typedef {PartEvent | SnapshotEvent | DoneEvent} StreamEvent
 * @typedef {{userMessage?: Message, assistantMessage: Message, streamId: string, stream: Stream}} Turn
 */

/** ChatError is an error the server answered (or a stream ended with). */
export class ChatError extends Error {
  /**
   * @param {string} code the contract's snake_case code
   * @param {string} message
   * @param {number} [status] the HTTP status, if any
   * @param {number} [retryAfter] seconds, on rate_limited
   */
  constructor(code, message, status, retryAfter) {
    super(message);
    this.name = "ChatError";
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/**
 * Stream is one followed stream: an async iterator of its events, each
 * chunk once, ending after done. parts holds the answer so far.
 * @implements {AsyncIterable<StreamEvent>}
 */
export class Stream {
  /**
   * @param {ChatClient} client
   * @param {string} id
   * @param {number} last the last index the caller holds
   */
  constructor(client, id, last) {
    this.client = client;
    this.id = id;
    this.last = last;
    /** @type {Part[]} */
    this.parts = [];
    /** @type {StreamEvent[]} */
    this.queue = [];
    /** @type {((v: IteratorResult<StreamEvent>) => void) | null} */
    this.wake = null;
    /** @type {ChatError | null} */
    this.error = null;
    this.ended = false;
    /** @type {(() => void) | null} */
    this.stop = null; // ends the transport's follow
  }

  /** The text of the answer so far. */
  get text() {
    return textOf(this.parts);
  }

  /**
   * onFrame takes a frame of the stream; true when it was the last.
   * @param {any} f
   */
  onFrame(f) {
    switch (f.type) {
      case "chunk": {
        if (f.index <= this.last) return false; // held already
        this.last = f.index;
        const part = partOf(f);
        addPart(this.parts, part);
        this.push({ type: "part", index: f.index, part });
        return false;
      }
      case "snapshot":
        this.last = f.last_index;
        this.parts = (f.parts ?? [{ type: "text", text: f.content }]).map((/** @type {Part} */ p) => ({ ...p }));
        this.push({ type: "snapshot", lastIndex: f.last_index, parts: this.parts.map((p) => ({ ...p })), content: f.content });
        return false;
      case "done":
        this.push({ type: "done", status: f.status, lastIndex: f.last_index, error: f.error, usage: f.usage, finishReason: f.finish_reason });
        this.finish(null);
        return true;
      case "error":
        this.finish(new ChatError(f.code, f.message));
        return true;
    }
    return false;
  }

  /** @param {StreamEvent} ev */
  push(ev) {
    if (this.ended) return;
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w({ value: ev, done: false });
    } else this.queue.push(ev);
  }

  /** @param {ChatError | null} err */
  finish(err) {
    if (this.ended) return;
    this.ended = true;
    this.error = err;
    this.client.forget(this);
    if (this.wake && this.queue.length === 0) {
      const w = this.wake;
      this.wake = null;
      if (err) this.rejectWake?.(err);
      else w({ value: undefined, done: true });
    }
  }

  /** Stop following (the generation goes on; cancel it with client.cancel). */
  close() {
    if (!this.ended) {
      this.ended = true;
      this.stop?.();
      this.client.forget(this);
    }
    this.wake?.({ value: undefined, done: true });
    this.wake = null;
  }

  /** @returns {AsyncIterator<StreamEvent>} */
  [Symbol.asyncIterator]() {
    return {
      next: () => {
        const ev = this.queue.shift();
        if (ev) return Promise.resolve({ value: ev, done: false });
        if (this.ended) return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          this.wake = resolve;
          /** @type {((e: Error) => void) | undefined} */
          this.rejectWake = reject;
        });
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /**
   * result reads the stream to its end and returns the done event.
   * @returns {Promise<DoneEvent>}
   */
  async result() {
    /** @type {DoneEvent | undefined} */
    let done;
    for await (const ev of this) if (ev.type === "done") done = ev;
    if (!done) throw new ChatError("stream_closed", "The stream was closed before its end.");
    return done;
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string} url the server's base URL, e.g. "https://chat.example.com"
 * @property {string | (() => string)} token the access token, or a function that returns a fresh one
 * @property {"auto" | "websocket" | "sse"} [transport] "auto" (default): WebSocket, SSE after fallbackAfter failed connects in a row
 * @property {number} [fallbackAfter] default 2
 * @property {typeof WebSocket} [WebSocket] default the global one (Node: pass the `ws` package's)
 * @property {typeof fetch} [fetch] default the global one
 * @property {number} [backoffBase] ms, default 250
 * @property {number} [backoffCap] ms, default 10000
 */

/** ChatClient is chatstream's API, over one shared WebSocket (or SSE). */
export class ChatClient extends EventTarget {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    this.url = options.url.replace(/\/$/, "");
    this.tokenFn = typeof options.token === "function" ? options.token : () => /** @type {string} */ (options.token);
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.options = options;
    /** @type {"websocket" | "sse"} */
    this.mode = options.transport === "sse" || !(options.WebSocket ?? globalThis.WebSocket) ? "sse" : "websocket";
    /** @type {Map<string, Stream>} */
    this.streams = new Map();
    /** @type {Map<string, {onMessage: (m: Message) => void, onConversation: (f: any) => void, stop: () => void}>} */
    this.watches = new Map();
    /** @type {StreamSocket | null} */
    this.socket = null;
    this.closed = false;
  }

  /** The transport in use: "websocket" or "sse". */
  get transport() {
    return this.mode;
  }

  // --- the socket ---------------------------------------------------------

  /** @returns {StreamSocket} */
  ws() {
    if (this.socket) return this.socket;
    const wsURL = () => this.url.replace(/^http/, "ws") + "/v1/ws?access_token=" + encodeURIComponent(this.tokenFn());
    const s = new StreamSocket(wsURL, { WebSocket: this.options.WebSocket, backoffBase: this.options.backoffBase, backoffCap: this.options.backoffCap });
    s.addEventListener("state", (ev) => {
      this.dispatchEvent(new CustomEvent("state", { detail: /** @type {CustomEvent} */ (ev).detail }));
    });
    s.addEventListener("retry", () => {
      // Never opened, again and again: WebSockets do not get through.
      if (this.options.transport !== "websocket" && s.opened === 0 && s.failures >= (this.options.fallbackAfter ?? 2)) this.fallBack();
    });
    this.socket = s;
    return s;
  }

  // fallBack moves every stream and watch to SSE: WebSockets do not get
  // through. Each stream resumes from the last index it holds.
  fallBack() {
    if (this.mode === "sse") return;
    this.mode = "sse";
    this.socket?.close();
    this.socket = null;
    this.dispatchEvent(new CustomEvent("state", { detail: "sse" }));
    for (const st of [...this.streams.values()]) this.attach(st);
    for (const [id, w] of [...this.watches]) this.watch(id, w); // (a copy: watch sets the entry again)
  }

  /**
   * connected resolves true once socket s is open, false if the client
   * falls back to SSE first.
   * @param {StreamSocket} s
   * @returns {Promise<boolean>}
   */
  connected(s) {
    if (this.mode !== "websocket") return Promise.resolve(false);
    return new Promise((resolve) => {
      /** @param {Event} ev */
      const on = (ev) => {
        if (/** @type {CustomEvent} */ (ev).detail !== "sse") return;
        this.removeEventListener("state", on);
        resolve(false);
      };
      this.addEventListener("state", on);
      s.connected().then(() => {
        this.removeEventListener("state", on);
        resolve(this.mode === "websocket");
      });
    });
  }

  /** dropSocket closes the socket as a network failure would (for tests). */
  dropSocket() {
    this.socket?.dropForTest();
  }

  // --- HTTP ----------------------------------------------------------------

  /**
   * request calls an HTTP route and returns its JSON answer.
   * @param {string} method
   * @param {string} path
   * @param {any} [body]
   */
  async request(method, path, body) {
    const res = await this.fetch(this.url + path, {
      method,
      headers: { Authorization: "Bearer " + this.tokenFn(), ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = res.status === 204 ? {} : await res.json().catch(() => ({}));
    if (!res.ok) {
      const retry = Number(res.headers.get("Retry-After")) || undefined;
      throw new ChatError(data.error?.code ?? "http_" + res.status, data.error?.message ?? res.statusText, res.status, retry);
    }
    return data;
  }

  /** @param {string} [title] @returns {Promise<Conversation>} */
  createConversation(title) {
    return this.request("POST", "/v1/conversations", title === undefined ? {} : { title });
  }

  /** @param {{limit?: number, before?: string}} [page] @returns {Promise<{conversations: Conversation[], next_cursor: string | null}>} */
  listConversations(page = {}) {
    const q = new URLSearchParams();
    if (page.limit) q.set("limit", String(page.limit));
    if (page.before) q.set("before", page.before);
    return this.request("GET", "/v1/conversations" + (q.size ? "?" + q : ""));
  }

  /** @param {string} id @returns {Promise<Conversation & {messages: Message[], has_more: boolean}>} */
  getConversation(id) {
    return this.request("GET", "/v1/conversations/" + encodeURIComponent(id));
  }

  /** @param {string} id @param {{limit?: number, before?: string}} [page] @returns {Promise<{messages: Message[], has_more: boolean}>} */
  messages(id, page = {}) {
    const q = new URLSearchParams();
    if (page.limit) q.set("limit", String(page.limit));
    if (page.before) q.set("before", page.before);
    return this.request("GET", `/v1/conversations/${encodeURIComponent(id)}/messages` + (q.size ? "?" + q : ""));
  }

  /** @param {string} id @param {{title?: string, current_message_id?: string}} change @returns {Promise<Conversation>} */
  updateConversation(id, change) {
    return this.request("PATCH", "/v1/conversations/" + encodeURIComponent(id), change);
  }

  /** @param {string} id */
  async deleteConversation(id) {
    await this.request("DELETE", "/v1/conversations/" + encodeURIComponent(id));
  }

  // --- turns ----------------------------------------------------------------

  /**
   * send posts a user message and starts its answer, returned followed
   * from its start. A client_message_id (made if not given) makes a retry
   * after a lost answer safe.
   * @param {string} conversationId
   * @param {string} content
   * @param {{clientMessageId?: string}} [opts]
   * @returns {Promise<Turn>}
   */
  send(conversationId, content, opts = {}) {
    const cid = opts.clientMessageId ?? newID();
    return this.turn({ type: "send", conversation_id: conversationId, content, client_message_id: cid },
      `/v1/conversations/${encodeURIComponent(conversationId)}/messages`, { content, client_message_id: cid });
  }

  /**
   * edit adds a new version of user message messageId and starts its answer.
   * @param {string} messageId
   * @param {string} content
   * @param {{clientMessageId?: string}} [opts]
   * @returns {Promise<Turn>}
   */
  edit(messageId, content, opts = {}) {
    const cid = opts.clientMessageId ?? newID();
    return this.turn({ type: "edit", message_id: messageId, content, client_message_id: cid },
      `/v1/messages/${encodeURIComponent(messageId)}/edit`, { content, client_message_id: cid });
  }

  /**
   * regenerate adds a new version of answer messageId.
   * @param {string} messageId
   * @returns {Promise<Turn>}
   */
  regenerate(messageId) {
    return this.turn({ type: "regenerate", message_id: messageId }, `/v1/messages/${encodeURIComponent(messageId)}/regenerate`, undefined, false);
  }

  /**
   * turn starts a send, edit or regenerate: over the socket (which the
   * server subscribes to the answer from its start), or over HTTP.
   * @param {any} frame
   * @param {string} path
   * @param {any} body
   * @param {boolean} [retry] send again after a lost answer (an idempotent turn)
   * @returns {Promise<Turn>}
   */
  async turn(frame, path, body, retry = true) {
    if (this.mode === "websocket") {
      const s = this.ws();
      for (let attempt = 0; this.mode === "websocket"; attempt++) {
        try {
          if (!(await this.connected(s))) break; // fell back to SSE
          const acc = await s.request(frame);
          const st = this.stream(acc.stream_id, -1);
          s.adopt(st.id, (f) => st.onFrame(f));
          st.stop = () => s.unfollow(st.id);
          return { userMessage: acc.user_message, assistantMessage: acc.assistant_message, streamId: acc.stream_id, stream: st };
        } catch (e) {
          const err = /** @type {any} */ (e);
          if (err.code) throw new ChatError(err.code, err.message);
          if (!retry || attempt >= 5) throw e;
        }
      }
    }
    const acc = await this.request("POST", path, body);
    return { userMessage: acc.user_message, assistantMessage: acc.assistant_message, streamId: acc.stream_id, stream: this.follow(acc.stream_id) };
  }

  /** @param {string} streamId */
  cancel(streamId) {
    return this.request("POST", `/v1/streams/${encodeURIComponent(streamId)}/cancel`, {});
  }

  /**
   * approve answers a tool call that waits for the user's approval.
   * @param {string} streamId
   * @param {string} callId
   * @param {boolean} approved
   */
  approve(streamId, callId, approved) {
    return this.request("POST", `/v1/streams/${encodeURIComponent(streamId)}/approvals`, { call_id: callId, approved });
  }

  // --- following ------------------------------------------------------------

  /**
   * @param {string} id
   * @param {number} last
   */
  stream(id, last) {
    let st = this.streams.get(id);
    if (!st) {
      st = new Stream(this, id, last);
      this.streams.set(id, st);
    }
    return st;
  }

  /** @param {Stream} st */
  forget(st) {
    if (this.streams.get(st.id) === st) this.streams.delete(st.id);
  }

  /**
   * follow follows stream streamId from after lastIndex (default -1: from
   * its start): every chunk after it once, then done.
   * @param {string} streamId
   * @param {{lastIndex?: number}} [opts]
   * @returns {Stream}
   */
  follow(streamId, opts = {}) {
    const known = this.streams.get(streamId);
    if (known) return known;
    const st = this.stream(streamId, opts.lastIndex ?? -1);
    this.attach(st);
    return st;
  }

  /** attach follows st on the transport in use, from st.last. @param {Stream} st */
  attach(st) {
    st.stop?.();
    if (this.mode === "websocket") {
      const s = this.ws();
      s.follow(st.id, st.last, (f) => st.onFrame(f));
      st.stop = () => s.unfollow(st.id);
      return;
    }
    const f = new SSEFollower({
      url: `${this.url}/v1/streams/${encodeURIComponent(st.id)}/events`,
      token: this.tokenFn,
      fetch: this.fetch,
      lastEventID: String(st.last),
      onFrame: (fr) => st.onFrame(fr),
      onError: (e) => {
        const err = /** @type {any} */ (e);
        if (err.status >= 400 && err.status < 500) {
          st.finish(new ChatError(err.code ?? "http_" + err.status, err.message, err.status));
          return true;
        }
        return false;
      },
      backoffBase: this.options.backoffBase,
      backoffCap: this.options.backoffCap,
    });
    st.stop = () => f.close();
  }

  /**
   * watch delivers a conversation's events: messages as they are made and
   * change, and conversation events (renamed, branch switched, deleted).
   * @param {string} conversationId
   * @param {{onMessage?: (m: Message) => void, onConversation?: (f: {event: "updated" | "deleted", conversation?: Conversation}) => void}} handlers
   * @returns {() => void} stops watching
   */
  watch(conversationId, handlers) {
    const onMessage = handlers.onMessage ?? (() => {});
    const onConversation = handlers.onConversation ?? (() => {});
    this.watches.get(conversationId)?.stop();
    let stop;
    if (this.mode === "websocket") {
      const s = this.ws();
      s.watch(conversationId, onMessage, onConversation);
      stop = () => s.unwatch(conversationId);
    } else {
      const f = new SSEFollower({
        url: `${this.url}/v1/conversations/${encodeURIComponent(conversationId)}/events`,
        token: this.tokenFn,
        fetch: this.fetch,
        onFrame: (fr) => {
          if (fr.type === "message") onMessage(fr.message);
          if (fr.type === "conversation") onConversation(fr);
          return fr.type === "conversation" && fr.event === "deleted";
        },
        onError: (e) => /** @type {any} */ (e).status === 404,
      });
      stop = () => f.close();
    }
    this.watches.set(conversationId, { onMessage, onConversation, stop });
    return () => {
      this.watches.get(conversationId)?.stop();
      this.watches.delete(conversationId);
    };
  }

  /** close stops everything: the socket, every follow and watch. */
  close() {
    this.closed = true;
    for (const st of [...this.streams.values()]) st.close();
    for (const w of this.watches.values()) w.stop();
    this.watches.clear();
    this.socket?.close();
    this.socket = null;
  }
}

/** newID makes a client_message_id. */
function newID() {
  return globalThis.crypto?.randomUUID ? globalThis.crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2);
}
