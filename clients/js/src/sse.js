// Server-Sent Events over fetch, for when WebSockets do not get through:
// one response per followed stream or watched conversation, read as it
// streams, resumed with Last-Event-ID after a drop (the server's contract:
// every index after it once). fetch, unlike EventSource, sends the
// Authorization header and runs in Node as in browsers.

/**
 * @typedef {object} SSEEvent
 * @property {string} event
 * @property {string} id
 * @property {string} data
 */

/**
 * readEvents reads the events of an SSE response body.
 * @param {ReadableStream<Uint8Array>} body
 * @returns {AsyncGenerator<SSEEvent>}
 */
export async function* readEvents(body) {
  const reader = body.pipeThrough(/** @type {ReadableWritablePair<string, Uint8Array>} */ (/** @type {unknown} */ (new TextDecoderStream()))).getReader();
  let buf = "";
  let ev = { event: "", id: "", data: /** @type {string[]} */ ([]) };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (ev.data.length) yield { event: ev.event || "message", id: ev.id, data: ev.data.join("\n") };
          ev = { event: "", id: "", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: ping
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") ev.event = value;
        else if (field === "id") ev.id = value;
        else if (field === "data") ev.data.push(value);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * SSEFollower follows one SSE route until it ends (done, deletion) or is
 * closed, reconnecting with backoff and jitter; onFrame gets each frame.
 */
export class SSEFollower {
  /**
   * @param {object} o
   * @param {string} o.url the route's URL
   * @param {() => Promise<string> | string} o.token
   * @param {typeof fetch} o.fetch
   * @param {(frame: any) => boolean} o.onFrame returns true when the frame is the last
   * @param {(err: Error) => boolean} o.onError returns true to give up (the error is permanent)
   * @param {string} [o.lastEventID]
   * @param {number} [o.backoffBase]
   * @param {number} [o.backoffCap]
   */
  constructor(o) {
    this.o = o;
    this.lastEventID = o.lastEventID ?? "";
    this.controller = new AbortController();
    this.closed = false;
    this.done = this.run();
  }

  async run() {
    const { o } = this;
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        /** @type {Record<string, string>} */
        const headers = { Authorization: "Bearer " + (await o.token()), Accept: "text/event-stream" };
        if (this.lastEventID !== "") headers["Last-Event-ID"] = this.lastEventID;
        const res = await o.fetch(o.url, { headers, signal: this.controller.signal });
        if (!res.ok) {
          const body = await res.json().catch(() => ({}));
          const err = Object.assign(new Error(body.error?.message || res.statusText), { code: body.error?.code, status: res.status });
          if (o.onError(err)) return;
        } else if (res.body) {
          attempt = 0;
          for await (const ev of readEvents(res.body)) {
            if (ev.id !== "") this.lastEventID = ev.id;
            if (o.onFrame(JSON.parse(ev.data))) {
              this.close();
              return;
            }
          }
        }
      } catch (e) {
        if (this.closed) return;
        if (o.onError(/** @type {Error} */ (e))) return;
      }
      if (this.closed) return;
      const cap = Math.min(o.backoffCap ?? 10000, (o.backoffBase ?? 250) * 2 ** Math.min(attempt, 16));
      await new Promise((r) => setTimeout(r, Math.random() * cap));
    }
  }

  close() {
    this.closed = true;
    this.controller.abort();
  }
}
