// StreamSocket owns one WebSocket shared by every stream and conversation
// a page follows. It reconnects with exponential backoff and full jitter,
// and on every (re)connect resubscribes each followed stream from the last
// chunk index it holds and re-watches each conversation, so after a drop
// nothing is repeated and nothing is missing. ChatClient (index.js) is
// built on it; the web page uses it directly.

/**
 * @typedef {object} SocketOptions
 * @property {typeof WebSocket} [WebSocket] the WebSocket constructor (default: the global one; in Node, the `ws` package's)
 * @property {number} [backoffBase] first reconnect delay cap, ms (default 250)
 * @property {number} [backoffCap] largest reconnect delay, ms (default 10000)
 */

export class StreamSocket extends EventTarget {
  /**
   * @param {() => string} urlFn returns the ws URL with a fresh token
   * @param {SocketOptions} [options]
   */
  constructor(urlFn, options = {}) {
    super();
    this.urlFn = urlFn;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.backoffBase = options.backoffBase ?? 250;
    this.backoffCap = options.backoffCap ?? 10000;
    /** sockets opened so far; failures: connects in a row that never opened */
    this.opened = 0;
    this.failures = 0;
    /** @type {Map<string, {last: number, onFrame: (f: any) => void}>} */
    this.streams = new Map(); // stream id → {last, onFrame}
    /** @type {Map<string, {onMessage: (m: any) => void, onConversation: (f: any) => void}>} */
    this.watches = new Map(); // conversation id → {onMessage, onConversation}
    /** @type {Map<string, {resolve: (f: any) => void, reject: (e: Error) => void}>} */
    this.pending = new Map(); // request id → {resolve, reject}
    this.seq = 0;
    this.attempt = 0;
    this.state = "connecting";
    this.closed = false;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    this.dropAfterNext = false; // test hook: lose the socket right after the next frame
    this.connect();
  }

  /** @param {string} state */
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  connect() {
    if (this.closed) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new this.WebSocketImpl(this.urlFn());
    } catch {
      this.failures++;
      this.retry();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.opened++;
      this.failures = 0;
      this.attempt = 0;
      this.setState("connected");
      for (const [id, s] of this.streams) this.raw({ type: "subscribe", stream_id: id, last_index: s.last });
      for (const id of this.watches.keys()) this.raw({ type: "watch", conversation_id: id });
    };
    ws.onmessage = (ev) => this.onFrame(JSON.parse(String(ev.data)));
    ws.onerror = () => {}; // onclose follows
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!opened) this.failures++;
      for (const p of this.pending.values()) p.reject(new Error("connection lost"));
      this.pending.clear();
      if (this.closed) return;
      if (ev.code === 1008 || ev.code === 4001) {
        this.dispatchEvent(new CustomEvent("unauthorized"));
      }
      this.retry();
    };
  }

  // retry connects again after a backoff with full jitter; every retry is
  // told as a "retry" event (failures says how many connects in a row
  // never opened).
  retry() {
    if (this.closed) return;
    this.setState("reconnecting");
    this.dispatchEvent(new CustomEvent("retry", { detail: this.failures }));
    const cap = Math.min(this.backoffCap, this.backoffBase * 2 ** this.attempt++);
    this.timer = setTimeout(() => this.connect(), Math.random() * cap);
  }

  /** @param {object} frame */
  raw(frame) {
    if (this.ws && this.ws.readyState === 1 /* OPEN */) {
      this.ws.send(JSON.stringify(frame));
      if (this.dropAfterNext) {
        // The frame goes out before the close: its answer is what is lost.
        this.dropAfterNext = false;
        this.dropForTest();
      }
      return true;
    }
    return false;
  }

  /**
   * connected resolves once the socket is open (at once if it is).
   * @returns {Promise<void>}
   */
  connected() {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve) => {
      /** @param {Event} ev */
      const on = (ev) => {
        if (/** @type {CustomEvent} */ (ev).detail !== "connected") return;
        this.removeEventListener("state", on);
        resolve();
      };
      this.addEventListener("state", on);
    });
  }

  /**
   * request sends a frame and resolves with the server's answer to it.
   * @param {object} frame
   * @returns {Promise<any>}
   */
  request(frame) {
    const id = "r" + ++this.seq;
    return new Promise((resolve, reject) => {
      if (!this.raw({ ...frame, request_id: id })) {
        reject(new Error("not connected"));
        return;
      }
      this.pending.set(id, { resolve, reject });
    });
  }

  /** @param {any} f */
  onFrame(f) {
    const p = f.request_id === undefined ? undefined : this.pending.get(f.request_id);
    if (p) {
      this.pending.delete(f.request_id);
      if (f.type === "error") p.reject(Object.assign(new Error(f.message), { code: f.code }));
      else p.resolve(f);
    }
    switch (f.type) {
      case "chunk": {
        const s = this.streams.get(f.stream_id);
        if (!s || f.index !== s.last + 1) return; // not ours, or already held
        s.last = f.index;
        s.onFrame(f);
        break;
      }
      case "snapshot": {
        const s = this.streams.get(f.stream_id);
        if (!s) return;
        s.last = f.last_index;
        s.onFrame(f);
        break;
      }
      case "done": {
        const s = this.streams.get(f.stream_id);
        if (!s) return;
        this.streams.delete(f.stream_id);
        s.onFrame(f);
        break;
      }
      case "message": {
        const w = this.watches.get(f.conversation_id);
        if (w) w.onMessage(f.message);
        break;
      }
      case "conversation": {
        const w = this.watches.get(f.conversation_id);
        if (w) w.onConversation(f);
        break;
      }
      case "error":
        const s = f.stream_id && f.request_id === undefined ? this.streams.get(f.stream_id) : undefined;
        if (s) {
          this.streams.delete(f.stream_id);
          s.onFrame(f);
        }
        this.dispatchEvent(new CustomEvent("servererror", { detail: f }));
        break;
    }
  }

  /**
   * follow delivers the frames of a stream from index last+1 on.
   * @param {string} streamId
   * @param {number} last
   * @param {(f: any) => void} onFrame
   */
  follow(streamId, last, onFrame) {
    if (this.streams.has(streamId)) return;
    this.streams.set(streamId, { last, onFrame });
    this.raw({ type: "subscribe", stream_id: streamId, last_index: last });
  }

  /**
   * adopt follows a stream the server subscribed this socket to (send).
   * @param {string} streamId
   * @param {(f: any) => void} onFrame
   */
  adopt(streamId, onFrame) {
    if (!this.streams.has(streamId)) this.streams.set(streamId, { last: -1, onFrame });
  }

  /** @param {string} streamId */
  unfollow(streamId) {
    if (this.streams.delete(streamId)) this.raw({ type: "unsubscribe", stream_id: streamId });
  }

  // watch delivers the message events of a conversation to onMessage and
  // its conversation events (renamed, branch switched, deleted) to
  // onConversation; it resolves once the server watches for this socket,
  // so nothing after it is missed.
  /**
   * @param {string} convId
   * @param {(m: any) => void} onMessage
   * @param {(f: any) => void} onConversation
   */
  watch(convId, onMessage, onConversation) {
    this.watches.set(convId, { onMessage, onConversation });
    return this.request({ type: "watch", conversation_id: convId }).catch(() => {
      // Not connected: the watch is made on (re)connect.
    });
  }

  /** @param {string} convId */
  unwatch(convId) {
    if (this.watches.delete(convId)) this.raw({ type: "unwatch", conversation_id: convId });
  }

  // dropForTest closes the socket as a network failure would.
  dropForTest() {
    if (this.ws) this.ws.close(4000, "test drop");
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    for (const p of this.pending.values()) p.reject(new Error("client closed"));
    this.pending.clear();
  }
}
