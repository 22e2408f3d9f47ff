// The chat page: dev sign-in, conversation list, messages rendered as they
// stream, a composer with Stop, versions (‹ n/m ›), Edit and Regenerate,
// and live updates from other tabs.
import { StreamSocket } from "./client/socket.js";
import { addPart, copyParts, partOfChunk, renderParts, usageText } from "./parts.js";
import { Session } from "./session.js";
import { ConversationList } from "./sidebar.js";
import { fitToViewport } from "./viewport.js";

const $ = (id) => document.getElementById(id);
const STATUS_LABEL = { streaming: "streaming", pending: "waiting", complete: "", cancelled: "stopped", failed: "failed" };

// SUGGESTIONS fill the composer with prompts that show what answers can
// hold; the offline demo model reads their /demo line (README, "Demo").
const SUGGESTIONS = [
  ["Think, then answer", "/demo think=40\nHow do I resume a dropped stream?"],
  ["Use a tool", "/demo think=12 tool=calculator\nWhat is (17 + 25) * 3?"],
  ["Ask before acting", "/demo tool=save_note\nRemember to buy milk"],
];

// session is the sign-in every tab of the browser shares.
const session = new Session();

// state is the page's model.
const state = {
  current: null, // open conversation id
  messages: new Map(), // id → message ({id, role, content, parts, status, error, usage})
  order: [], // message ids of the open conversation, oldest first
  client: null,
  loading: null, // events held while a conversation loads
  loadSeq: 0, // counts conversation loads; only the newest draws
  loaded: null, // the conversation fully drawn
  hasMore: false, // the branch has messages older than the first drawn
  loadingOlder: false,
  editing: null, // the user message being edited
  convEvent: null, // a conversation event held while this tab sends or loads
};
// The browser tests' hooks: drop the socket as a network failure would,
// now or right after the next frame goes out (its answer is lost). They
// read what the page shows, never its state.
window.chatstream = {
  dropSocket: () => state.client?.dropForTest(),
  dropAfterNextFrame: () => { if (state.client) state.client.dropAfterNext = true; },
};

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", ...(session.token ? { Authorization: "Bearer " + session.token } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    signOut();
    throw new Error("Please sign in again.");
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw Object.assign(new Error(data.error?.message || res.statusText), { code: data.error?.code });
  return data;
}

// --- sign in -----------------------------------------------------------

function showSignIn() {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-name").focus();
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("signin-name").value.trim();
  try {
    await session.signIn(name);
    $("signin-error").textContent = "";
    start();
  } catch (e) {
    $("signin-error").textContent = e.message;
  }
});

// signOut signs out of every tab.
function signOut() {
  session.signOut();
  stopApp();
  showSignIn();
}
$("signout").addEventListener("click", signOut);

// stopApp closes this tab's socket; the open conversation stays in the
// address and the draft in the composer, for after the next sign-in.
function stopApp() {
  if (state.client) state.client.close();
  state.client = null;
}

// Another tab signed out, or the token expired and could not be renewed.
session.addEventListener("signedout", (ev) => {
  stopApp();
  showSignIn();
  if (/** @type {CustomEvent} */ (ev).detail === "expired") $("signin-error").textContent = "Your sign-in expired: please sign in again.";
});
// Another tab signed in (or in as someone else): this tab follows.
session.addEventListener("signedin", () => {
  stopApp();
  start().catch((e) => flash(e.message));
});

// --- app ---------------------------------------------------------------

async function start() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = session.user || "";
  session.schedule();
  state.current = null;
  state.loaded = null;
  // Every connect takes the newest token: a renewed one replaces the old
  // before the server ends the socket at the old one's exp.
  const wsURL = () => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/v1/ws?access_token=${encodeURIComponent(session.token)}`;
  };
  state.client = new StreamSocket(wsURL);
  state.client.addEventListener("state", (ev) => {
    $("conn").dataset.state = ev.detail;
    $("conn").textContent = ev.detail === "connected" ? "connected" : ev.detail + "…";
  });
  // The server ends a socket at its token's exp: with a renewed token the
  // socket just connects again.
  state.client.addEventListener("unauthorized", () => { if (!session.valid()) signOut(); });
  await list.reset();
  const fromHash = location.hash.slice(1);
  const first = list.first();
  if (fromHash) await openConversation(fromHash).catch(() => showEmpty());
  else if (first) await openConversation(first.id);
  else showEmpty();
  $("input").focus();
}

const list = new ConversationList($("conversations"), {
  api,
  onOpen: (id) => openConversation(id),
  onRenamed: (conv) => { if (conv.id === state.current) $("title").textContent = conv.title || "New chat"; },
  onDeleted: (id) => { if (id === state.current) leaveConversation(); },
  onError: (e) => flash(e.message),
});

function renderConversations() {
  list.setCurrent(state.current);
}

// leaveConversation closes the open conversation (it was deleted).
function leaveConversation() {
  if (state.current) state.client.unwatch(state.current);
  for (const mid of state.order) state.client.unfollow(mid);
  history.replaceState(null, "", "#");
  showEmpty();
  renderConversations();
}

function showEmpty() {
  state.current = null;
  state.loaded = null;
  state.loadSeq++;
  state.order = [];
  state.hasMore = false;
  state.editing = null;
  $("title").textContent = "New chat";
  const empty = document.createElement("div");
  empty.className = "empty";
  const p = document.createElement("p");
  p.textContent = "Ask anything. Answers stream in as they are written.";
  const tries = document.createElement("div");
  tries.className = "suggestions";
  for (const [label, prompt] of SUGGESTIONS) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.title = prompt;
    b.addEventListener("click", () => {
      $("input").value = prompt;
      $("input").focus();
    });
    tries.append(b);
  }
  empty.append(p, tries);
  $("messages").replaceChildren(empty);
  setBusy(null);
}

$("new-chat").addEventListener("click", () => {
  if (state.current) state.client.unwatch(state.current);
  history.replaceState(null, "", "#");
  showEmpty();
  renderConversations();
  $("input").focus();
  document.body.classList.remove("sidebar-open");
});

$("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));

// openConversation shows conversation id's current branch, its newest
// messages (older ones load as the user scrolls up). force draws it again
// when it is open: its branch changed.
async function openConversation(id, force = false) {
  if (id === state.current && state.loaded === id && !force) return; // already open
  // Only the newest load draws: an older one still awaiting stops.
  const seq = ++state.loadSeq;
  state.loaded = null;
  if (state.current && state.current !== id) state.client.unwatch(state.current);
  for (const mid of state.order) {
    state.client.unfollow(mid);
    const m = state.messages.get(mid);
    if (m) m.following = false;
  }
  state.current = id;
  history.replaceState(null, "", "#" + id);
  document.body.classList.remove("sidebar-open");
  renderConversations();
  // Watch first, so nothing that happens while we load is missed; events
  // that arrive before the conversation is drawn are applied after it.
  state.loading = [];
  if (state.client.watches.has(id) && force) {
    // Still watched: events meanwhile are held by state.loading.
  } else {
    await state.client.watch(id, onMessageEvent, onConversationEvent);
  }
  if (seq !== state.loadSeq) return;
  let conv;
  try {
    conv = await api("GET", "/v1/conversations/" + id);
  } catch (e) {
    if (seq === state.loadSeq) {
      state.loading = null;
      leaveConversation();
      list.remove(id);
    }
    throw e;
  }
  if (seq !== state.loadSeq) return;
  $("title").textContent = conv.title || "New chat";
  list.update(conv);
  state.order = [];
  state.editing = null;
  state.hasMore = conv.has_more;
  $("messages").replaceChildren();
  for (const m of conv.messages) upsert(m);
  for (const m of conv.messages) {
    // An answer still streaming is picked up from its start: Postgres holds
    // no partial text, the chunk log has it all.
    if (m.role === "assistant" && (m.status === "streaming" || m.status === "pending")) followStream(m.id, -1, true);
  }
  const early = state.loading;
  state.loading = null;
  state.loaded = id;
  for (const m of early) onMessageEvent(m);
  fillUp();
  applyConversationEvent();
}

// onConversationEvent applies a rename, branch switch or deletion, from
// this tab or another.
function onConversationEvent(f) {
  if (f.event === "deleted") {
    list.remove(f.conversation_id);
    if (f.conversation_id === state.current) {
      leaveConversation();
      flash("This conversation was deleted.");
    }
    return;
  }
  list.update(f.conversation);
  if (f.conversation_id !== state.current) return;
  $("title").textContent = f.conversation.title || "New chat";
  state.convEvent = f.conversation;
  applyConversationEvent();
}

// applyConversationEvent draws the branch a conversation event names, once
// this tab is not in the middle of a send or load of its own.
function applyConversationEvent() {
  const conv = state.convEvent;
  if (!conv || state.sending || state.loading) return;
  state.convEvent = null;
  if (conv.id !== state.current) return;
  const leaf = conv.current_message_id ?? null;
  if (leaf !== (state.order.at(-1) ?? null)) openConversation(conv.id, true).catch((e) => flash(e.message));
}

// --- older messages ------------------------------------------------------

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 200) loadOlder();
});

// fillUp loads older messages while they do not fill the view.
async function fillUp() {
  const box = $("messages");
  while (state.hasMore && box.scrollHeight <= box.clientHeight) {
    if (!(await loadOlder())) return;
  }
}

// loadOlder puts the page of messages before the first drawn above it,
// keeping what the user looks at in place.
async function loadOlder() {
  if (!state.hasMore || state.loadingOlder || !state.order.length || state.loading) return false;
  const seq = state.loadSeq;
  state.loadingOlder = true;
  try {
    const page = await api("GET", `/v1/conversations/${state.current}/messages?limit=50&before=${state.order[0]}`);
    if (seq !== state.loadSeq) return false;
    const box = $("messages");
    const height = box.scrollHeight;
    const first = box.firstChild;
    const ids = [];
    for (const m of page.messages) {
      if (state.order.includes(m.id)) continue;
      remember(m);
      box.insertBefore(messageElement(state.messages.get(m.id)), first);
      ids.push(m.id);
    }
    state.order = [...ids, ...state.order];
    for (const mid of ids) renderMessage(mid, false);
    state.hasMore = page.has_more;
    box.scrollTop += box.scrollHeight - height;
    return true;
  } catch (e) {
    flash(e.message);
    return false;
  } finally {
    state.loadingOlder = false;
  }
}

// onMessageEvent applies a message event from any tab.
function onMessageEvent(m) {
  if (m.conversation_id !== state.current) return;
  if (state.loading) {
    state.loading.push(m);
    return;
  }
  const known = state.messages.get(m.id);
  // A new message not below the branch drawn is of another branch (an
  // edit or regenerate elsewhere): the conversation event that follows
  // draws it if it becomes the branch shown.
  if (!state.order.includes(m.id) && (m.parent_id ?? null) !== (state.order.at(-1) ?? null)) return;
  if (known && known.following) {
    // The stream itself brings the text; only the status matters here.
    if (m.status !== "streaming" && m.status !== "pending") known.eventStatus = m.status;
    return;
  }
  upsert(m);
  // This tab's own send is followed from its accepted answer.
  if (state.sending) return;
  if (m.role === "assistant" && (m.status === "streaming" || m.status === "pending")) followStream(m.id, -1, true);
}

function followStream(id, last, reset) {
  const m = state.messages.get(id);
  if (!m || m.following) return;
  if (reset) {
    m.content = "";
    m.parts = [];
  }
  m.following = true;
  setBusy(id);
  state.client.follow(id, last, (f) => onStreamFrame(id, f));
}

function onStreamFrame(id, f) {
  const m = state.messages.get(id);
  if (!m) return;
  switch (f.type) {
    case "chunk":
      m.content += f.content;
      addPart(m.parts, partOfChunk(f));
      if (m.status === "pending") m.status = "streaming";
      break;
    case "snapshot":
      m.content = f.content;
      m.parts = f.parts ? copyParts(f.parts) : [{ type: "text", text: f.content }];
      break;
    case "done":
      m.status = f.status;
      m.error = f.error || null;
      m.usage = f.usage || null;
      m.following = false;
      if (m.busy) setBusy(null);
      break;
    case "error":
      m.status = "failed";
      m.error = { code: f.code, message: f.message };
      m.following = false;
      setBusy(null);
      break;
  }
  scheduleRender(id);
}

// remember adds or updates a message in the page's model.
function remember(m) {
  const known = state.messages.get(m.id);
  if (known) {
    Object.assign(known, { status: m.status, error: m.error || null, content: m.content || known.content,
      parts: m.parts?.length ? copyParts(m.parts) : known.parts, usage: m.usage || known.usage || null,
      sibling_ids: m.sibling_ids || known.sibling_ids, parent_id: m.parent_id ?? known.parent_id });
  } else {
    state.messages.set(m.id, { ...m, parts: copyParts(m.parts), error: m.error || null, usage: m.usage || null,
      view: { thinking: new Map(), answering: new Set(), onAnswer: (callId, approved) => answerCall(m.id, callId, approved) } });
  }
}

// upsert adds or updates a message of the open conversation, drawn at the
// end of the branch.
function upsert(m) {
  remember(m);
  if (!state.order.includes(m.id)) {
    state.order.push(m.id);
    $("messages").append(messageElement(state.messages.get(m.id)));
  }
  renderMessage(m.id);
}

// cutFrom takes message id and every message after it off the branch
// drawn: an edit or regenerate replaces them.
function cutFrom(id) {
  const i = state.order.indexOf(id);
  if (i < 0) return;
  for (const mid of state.order.slice(i)) {
    state.client.unfollow(mid);
    const m = state.messages.get(mid);
    if (m) m.following = false;
    document.getElementById("m-" + mid)?.remove();
  }
  state.order = state.order.slice(0, i);
  renderAll();
}

function messageElement(m) {
  const el = document.createElement("article");
  el.className = "message " + m.role;
  el.id = "m-" + m.id;
  el.dataset.id = m.id;
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  el.append(body, meta);
  return el;
}

const dirty = new Set();
let frame = 0;
function scheduleRender(id) {
  dirty.add(id);
  if (!frame) {
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const d of dirty) renderMessage(d);
      dirty.clear();
    });
  }
}

function renderAll() {
  for (const id of state.order) renderMessage(id, false);
}

function renderMessage(id, follow = true) {
  const m = state.messages.get(id);
  const el = document.getElementById("m-" + id);
  if (!m || !el) return;
  const body = el.querySelector(".body");
  if (state.editing === id) {
    if (!body.querySelector("textarea")) body.replaceChildren(editor(m));
  } else if (m.role === "user") body.textContent = m.content;
  else body.replaceChildren(renderParts(m, m.view));
  el.dataset.status = m.status;
  const meta = el.querySelector(".meta");
  meta.replaceChildren();
  const label = STATUS_LABEL[m.status];
  if (label) {
    const badge = document.createElement("span");
    badge.className = "badge " + m.status;
    badge.textContent = label;
    meta.append(badge);
  }
  if (m.status === "failed" && m.error) {
    const err = document.createElement("span");
    err.className = "error";
    err.textContent = m.error.message || m.error.code;
    meta.append(err);
  }
  meta.append(...controls(m));
  if (m.role === "assistant" && m.usage) {
    const usage = document.createElement("span");
    usage.className = "usage";
    usage.textContent = usageText(m.usage);
    meta.append(usage);
  }
  const box = $("messages");
  if (follow && box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

// --- versions, edit, regenerate ----------------------------------------

function smallButton(text, className, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "small " + className;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.title = label;
  b.addEventListener("click", onClick);
  return b;
}

// controls are a message's version switcher (‹ n/m › when it has
// siblings), Edit on a question, Regenerate on the last answer.
function controls(m) {
  const out = [];
  const sib = m.sibling_ids || [m.id];
  if (sib.length > 1) {
    const i = sib.indexOf(m.id);
    const nav = document.createElement("span");
    nav.className = "versions";
    const prev = smallButton("‹", "prev", "Previous version", () => showVersion(sib[i - 1]));
    prev.disabled = i <= 0 || !!state.busy;
    const label = document.createElement("span");
    label.className = "version";
    label.textContent = `${i + 1}/${sib.length}`;
    const next = smallButton("›", "next", "Next version", () => showVersion(sib[i + 1]));
    next.disabled = i >= sib.length - 1 || !!state.busy;
    nav.append(prev, label, next);
    out.push(nav);
  }
  if (state.busy || state.editing) return out;
  if (m.role === "user") out.push(smallButton("Edit", "edit", "Edit this message", () => startEdit(m.id)));
  if (m.role === "assistant" && state.order.at(-1) === m.id && !["streaming", "pending"].includes(m.status)) {
    out.push(smallButton("↻ Regenerate", "regenerate", "Regenerate this answer", () => regenerate(m.id)));
  }
  return out;
}

// showVersion shows the branch through message id.
async function showVersion(id) {
  if (!id || state.busy) return;
  try {
    await api("PATCH", "/v1/conversations/" + state.current, { current_message_id: id });
    await openConversation(state.current, true);
    document.getElementById("m-" + id)?.scrollIntoView({ block: "nearest" });
  } catch (e) {
    flash(e.message);
  }
}

function startEdit(id) {
  state.editing = id;
  renderAll();
  document.querySelector(`#m-${id} textarea`)?.focus();
}

function stopEdit() {
  state.editing = null;
  renderAll();
}

// editor is the inline editor of a question: Enter saves a new version,
// Escape cancels.
function editor(m) {
  const box = document.createElement("div");
  box.className = "editor";
  const ta = document.createElement("textarea");
  ta.value = m.content;
  ta.rows = Math.min(8, m.content.split("\n").length + 1);
  ta.maxLength = 32768;
  ta.setAttribute("aria-label", "Edit message");
  ta.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      saveEdit(m.id, ta.value);
    } else if (ev.key === "Escape") {
      stopEdit();
    }
  });
  const hint = document.createElement("span");
  hint.className = "muted";
  hint.textContent = "Enter saves as a new version · Esc cancels";
  box.append(ta, hint);
  return box;
}

async function saveEdit(id, content) {
  if (!content.trim() || state.busy) return;
  try {
    const acc = await startTurn({ type: "edit", message_id: id, content });
    state.editing = null;
    cutFrom(id);
    showTurn(acc);
  } catch (e) {
    flash(e.message);
  }
}

async function regenerate(id) {
  if (state.busy) return;
  try {
    const acc = await startTurn({ type: "regenerate", message_id: id });
    cutFrom(id);
    showTurn(acc);
  } catch (e) {
    flash(e.message);
  }
}

// startTurn sends a send, edit or regenerate frame and resolves with its
// accepted answer. A send or edit carries a client_message_id: if the
// connection drops before the answer, it is sent again with the same id
// once the socket is back, and the server answers what the first got
// (nothing is sent twice). A regenerate has no id and is not repeated.
async function startTurn(frame) {
  const f = frame.type === "regenerate" ? frame : { ...frame, client_message_id: newClientMessageID() };
  state.sending = true;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        return await state.client.request(f);
      } catch (e) {
        if (e.code || f.type === "regenerate" || attempt >= 5) throw e;
        await state.client.connected();
      }
    }
  } finally {
    state.sending = false;
  }
}

function newClientMessageID() {
  return crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2);
}

// showTurn draws the messages an accepted turn wrote and follows its
// answer from the start (the server subscribed this socket).
function showTurn(acc) {
  if (acc.user_message) upsert(acc.user_message);
  upsert(acc.assistant_message);
  const m = state.messages.get(acc.stream_id);
  if (!m.following) {
    m.following = true;
    m.content = "";
    m.parts = [];
    state.client.adopt(acc.stream_id, (f) => onStreamFrame(acc.stream_id, f));
  }
  setBusy(acc.stream_id);
  applyConversationEvent();
}

// --- composer ----------------------------------------------------------

function setBusy(streamId) {
  for (const m of state.messages.values()) m.busy = false;
  if (streamId) state.messages.get(streamId).busy = true;
  const changed = state.busy !== streamId;
  state.busy = streamId;
  $("stop").hidden = !streamId;
  $("send").hidden = !!streamId;
  if (changed) renderAll(); // Edit, Regenerate and versions wait for the answer
}

$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});
$("input").addEventListener("input", () => {
  const t = $("input");
  t.style.height = "auto";
  t.style.height = Math.min(t.scrollHeight, 240) + "px"; // the CSS max-height may cap it lower
});
fitToViewport($("app"), $("messages"));

$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const content = $("input").value;
  if (!content.trim() || state.busy) return;
  try {
    if (!state.current) {
      const conv = await api("POST", "/v1/conversations", { title: titleOf(content) });
      list.add(conv);
      await openConversation(conv.id);
    }
    const acc = await startTurn({ type: "send", conversation_id: state.current, content });
    $("input").value = "";
    $("input").style.height = "auto";
    showTurn(acc);
  } catch (e) {
    flash(e.message);
  }
});

$("stop").addEventListener("click", async () => {
  if (!state.busy) return;
  try {
    await state.client.request({ type: "cancel", stream_id: state.busy });
  } catch (e) {
    flash(e.message);
  }
});

// titleOf is a new conversation's title: the first sentence of its first
// message, without the demo model's "/demo key=value …" settings, cut at a
// word to 60 characters. The same rules as chatstream.TitleOf (title.go),
// which titles the AI SDK's chats.
function titleOf(content) {
  let text = content.trim();
  const demo = /^\/demo(\s|$)/.exec(text);
  if (demo) {
    const rest = text.slice(5);
    const nl = rest.indexOf("\n");
    const words = (nl < 0 ? rest : rest.slice(0, nl)).split(/\s+/).filter(Boolean);
    while (words.length && words[0].includes("=")) words.shift();
    text = (words.join(" ") + "\n" + (nl < 0 ? "" : rest.slice(nl + 1))).trim();
  }
  text = text.split("\n")[0];
  const end = /[.!?] /.exec(text);
  if (end) text = text.slice(0, end.index + 1);
  text = text.split(/\s+/).filter(Boolean).join(" ");
  const chars = [...text];
  if (chars.length <= 60) return text;
  const cut = chars.slice(0, 59).join("");
  const space = cut.lastIndexOf(" ");
  return (space > 30 ? cut.slice(0, space).replace(/[ ,;:]+$/, "") : cut) + "…";
}

// answerCall answers a tool call that waits for approval; every tab sees
// the answer come back as a chunk of the stream.
async function answerCall(streamId, callId, approved) {
  const m = state.messages.get(streamId);
  if (!m) return;
  m.view.answering.add(callId);
  renderMessage(streamId);
  try {
    await state.client.request({ type: "approve", stream_id: streamId, call_id: callId, approved });
  } catch (e) {
    flash(e.message);
  } finally {
    m.view.answering.delete(callId);
    scheduleRender(streamId);
  }
}

function flash(text) {
  const el = document.createElement("div");
  el.className = "flash";
  el.setAttribute("role", "alert");
  el.textContent = text;
  document.body.append(el);
  setTimeout(() => el.remove(), 4000);
}

if (session.valid()) start().catch((e) => { flash(e.message); });
else showSignIn();
