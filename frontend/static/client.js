// StreamClient owns the WebSocket. It reconnects with exponential backoff
// and jitter, and on every (re)connect resubscribes each followed stream
// from the last chunk index it holds and re-watches each conversation, so
// after a drop nothing is repeated and nothing is missing.

export class StreamClient extends EventTarget {
  constructor(urlFn) {
    super();
    this.urlFn = urlFn; // returns the ws URL with a fresh token
    this.streams = new Map(); // stream id → {last, onFrame}
    this.watches = new Map(); // conversation id → {onMessage, onConversation}
    this.pending = new Map(); // request id → {resolve, reject}
    this.seq = 0;
    this.attempt = 0;
    this.state = "connecting";
    this.closed = false;
    this.ws = null;
    this.dropAfterNext = false; // test hook: lose the socket right after the next frame
    this.connect();
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  connect() {
    if (this.closed) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(this.urlFn());
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.setState("connected");
      for (const [id, s] of this.streams) this.raw({ type: "subscribe", stream_id: id, last_index: s.last });
      for (const id of this.watches.keys()) this.raw({ type: "watch", conversation_id: id });
    };
    ws.onmessage = (ev) => this.onFrame(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const p of this.pending.values()) p.reject(new Error("connection lost"));
      this.pending.clear();
      if (this.closed) return;
      if (ev.code === 1008 || ev.code === 4001) {
        this.dispatchEvent(new CustomEvent("unauthorized"));
      }
      this.setState("reconnecting");
      // Exponential backoff with full jitter, capped at 10 s.
      const cap = Math.min(10000, 250 * 2 ** this.attempt++);
      setTimeout(() => this.connect(), Math.random() * cap);
    };
  }

  raw(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
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

  // connected resolves once the socket is open (at once if it is).
  connected() {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve) => {
      const on = (ev) => {
        if (ev.detail !== "connected") return;
        this.removeEventListener("state", on);
        resolve();
      };
      this.addEventListener("state", on);
    });
  }

  // request sends a frame and resolves with the server's answer to it.
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

  onFrame(f) {
    if (f.request_id !== undefined && this.pending.has(f.request_id)) {
      const p = this.pending.get(f.request_id);
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
        if (f.stream_id && this.streams.has(f.stream_id) && f.request_id === undefined) {
          const s = this.streams.get(f.stream_id);
          this.streams.delete(f.stream_id);
          s.onFrame(f);
        }
        this.dispatchEvent(new CustomEvent("servererror", { detail: f }));
        break;
    }
  }

  // follow delivers the frames of a stream from index last+1 on.
  follow(streamId, last, onFrame) {
    if (this.streams.has(streamId)) return;
    this.streams.set(streamId, { last, onFrame });
    this.raw({ type: "subscribe", stream_id: streamId, last_index: last });
  }

  // adopt follows a stream the server subscribed this socket to (send).
  adopt(streamId, onFrame) {
    if (!this.streams.has(streamId)) this.streams.set(streamId, { last: -1, onFrame });
  }

  unfollow(streamId) {
    if (this.streams.delete(streamId)) this.raw({ type: "unsubscribe", stream_id: streamId });
  }

  // watch delivers the message events of a conversation to onMessage and
  // its conversation events (renamed, branch switched, deleted) to
  // onConversation; it resolves once the server watches for this socket,
  // so nothing after it is missed.
  watch(convId, onMessage, onConversation) {
    this.watches.set(convId, { onMessage, onConversation });
    return this.request({ type: "watch", conversation_id: convId }).catch(() => {
      // Not connected: the watch is made on (re)connect.
    });
  }

  unwatch(convId) {
    if (this.watches.delete(convId)) this.raw({ type: "unwatch", conversation_id: convId });
  }

  // dropForTest closes the socket as a network failure would.
  dropForTest() {
    if (this.ws) this.ws.close(4000, "test drop");
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
  }
}
