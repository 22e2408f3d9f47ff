// The conversation list: newest first, loaded a page at a time as the user
// scrolls down (the server's next_cursor), each entry with Rename (inline:
// Enter saves, Escape cancels) and Delete (after an in-place confirm).

const PAGE = 20;

export class ConversationList {
  // ul is the list element; api(method, path, body) calls the server;
  // onOpen(id) opens a conversation; onRenamed(conv) and onDeleted(id) tell
  // the page of this tab's own changes.
  constructor(ul, { api, onOpen, onRenamed, onDeleted, onError }) {
    Object.assign(this, { ul, api, onOpen, onRenamed, onDeleted, onError });
    this.items = [];
    this.cursor = null;
    this.done = false;
    this.loading = null;
    this.current = null;
    this.editing = null; // id being renamed
    this.confirming = null; // id whose delete waits for a confirm
    this.epoch = 0; // counts resets: an old page does not land in a new list
    this.scroller = ul.closest("nav");
    this.scroller.addEventListener("scroll", () => this.moreIfNearEnd());
  }

  // moreIfNearEnd loads the next page when the end of the list shows (or
  // nearly): on scrolling, and after a page that did not fill the sidebar.
  moreIfNearEnd() {
    const el = this.scroller;
    if (el.scrollTop + el.clientHeight >= el.scrollHeight - 80) this.more();
  }

  // reset loads the first page again.
  reset() {
    this.epoch++;
    this.items = [];
    this.cursor = null;
    this.done = false;
    this.loading = null;
    return this.more();
  }

  // more loads the next page, if any; one load at a time.
  more() {
    if (this.done) return Promise.resolve();
    if (this.loading) return this.loading;
    const epoch = this.epoch;
    const q = `?limit=${PAGE}` + (this.cursor ? "&before=" + encodeURIComponent(this.cursor) : "");
    this.loading = this.api("GET", "/v1/conversations" + q).then(({ conversations, next_cursor }) => {
      if (epoch !== this.epoch) return;
      for (const c of conversations) if (!this.has(c.id)) this.items.push(c);
      this.cursor = next_cursor;
      this.done = !next_cursor;
      this.loading = null;
      this.render();
    }, (e) => {
      if (epoch === this.epoch) this.loading = null;
      this.onError(e);
    });
    return this.loading;
  }

  has(id) { return this.items.some((c) => c.id === id); }
  first() { return this.items[0]; }

  add(conv) {
    if (!this.has(conv.id)) this.items.unshift(conv);
    this.render();
  }

  update(conv) {
    const c = this.items.find((x) => x.id === conv.id);
    if (c && c.title !== conv.title) {
      c.title = conv.title;
      this.render();
    }
  }

  remove(id) {
    this.items = this.items.filter((c) => c.id !== id);
    this.render();
  }

  setCurrent(id) {
    this.current = id;
    this.render();
  }

  render() {
    this.ul.replaceChildren(...this.items.map((c) => this.row(c)));
    this.ul.querySelector(".rename-input")?.focus();
    if (!this.done && !this.loading) this.moreIfNearEnd();
  }

  row(c) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const title = c.title || "New chat";
    if (this.editing === c.id) {
      const input = document.createElement("input");
      input.className = "rename-input";
      input.value = c.title || "";
      input.maxLength = 200;
      input.setAttribute("aria-label", "New title");
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") {
          ev.preventDefault();
          this.rename(c.id, input.value.trim());
        } else if (ev.key === "Escape") {
          this.editing = null;
          this.render();
        }
      });
      li.append(input);
      return li;
    }
    if (this.confirming === c.id) {
      li.className = "confirm";
      const q = document.createElement("span");
      q.textContent = `Delete “${title}”?`;
      const yes = button("Delete", "confirm-delete danger", () => this.delete(c.id));
      const no = button("Cancel", "cancel-delete", () => { this.confirming = null; this.render(); });
      li.append(q, yes, no);
      return li;
    }
    const open = button(title, "open", () => this.onOpen(c.id));
    open.dataset.id = c.id;
    if (c.id === this.current) open.setAttribute("aria-current", "page");
    const rename = button("✎", "rename", () => { this.editing = c.id; this.confirming = null; this.render(); });
    rename.setAttribute("aria-label", `Rename “${title}”`);
    rename.title = "Rename";
    const del = button("×", "delete", () => { this.confirming = c.id; this.editing = null; this.render(); });
    del.setAttribute("aria-label", `Delete “${title}”`);
    del.title = "Delete";
    li.append(open, rename, del);
    return li;
  }

  async rename(id, title) {
    this.editing = null;
    try {
      const conv = await this.api("PATCH", "/v1/conversations/" + id, { title });
      this.update(conv);
      this.onRenamed(conv);
    } catch (e) {
      this.onError(e);
    }
    this.render();
  }

  async delete(id) {
    this.confirming = null;
    try {
      await this.api("DELETE", "/v1/conversations/" + id);
      this.remove(id);
      this.onDeleted(id);
    } catch (e) {
      this.onError(e);
      this.render();
    }
  }
}

function button(text, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}
