// The chat page: dev sign-in, conversation list, messages rendered as they
// stream, a composer with Stop, and live updates from other tabs.
import { StreamClient } from "./client.js";
import { addPart, copyParts, partOfChunk, renderParts, usageText } from "./parts.js";

const $ = (id) => document.getElementById(id);
const STATUS_LABEL = { streaming: "streaming", pending: "waiting", complete: "", cancelled: "stopped", failed: "failed" };

// SUGGESTIONS fill the composer with prompts that show what answers can
// hold; the offline demo model reads their /demo line (README, "Demo").
const SUGGESTIONS = [
  ["Think, then answer", "/demo think=40\nHow do I resume a dropped stream?"],
  ["Use a tool", "/demo think=12 tool=calculator\nWhat is (17 + 25) * 3?"],
  ["Ask before acting", "/demo tool=save_note\nRemember to buy milk"],
];

// state is the page's model.
const state = {
  token: sessionStorage.getItem("chatstream.token"),
  user: sessionStorage.getItem("chatstream.user"),
  conversations: [],
  current: null, // open conversation id
  messages: new Map(), // id → message ({id, role, content, parts, status, error, usage})
  order: [], // message ids of the open conversation, oldest first
  client: null,
  loading: null, // events held while a conversation loads
  loadSeq: 0, // counts conversation loads; only the newest draws
  loaded: null, // the conversation fully drawn
};
// The browser tests' one hook: drop the socket as a network failure would.
// They read what the page shows, never its state.
window.chatstream = { dropSocket: () => state.client?.dropForTest() };

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", ...(state.token ? { Authorization: "Bearer " + state.token } : {}) },
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
    const { token } = await api("POST", "/v1/auth/dev-token", { user: name });
    state.token = token;
    state.user = name;
    sessionStorage.setItem("chatstream.token", token);
    sessionStorage.setItem("chatstream.user", name);
    start();
  } catch (e) {
    $("signin-error").textContent = e.message;
  }
});

function signOut() {
  sessionStorage.removeItem("chatstream.token");
  sessionStorage.removeItem("chatstream.user");
  state.token = null;
  if (state.client) state.client.close();
  state.client = null;
  showSignIn();
}
$("signout").addEventListener("click", signOut);

// --- app ---------------------------------------------------------------

async function start() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = state.user || "";
  const wsURL = () => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/v1/ws?access_token=${encodeURIComponent(state.token)}`;
  };
  state.client = new StreamClient(wsURL);
  state.client.addEventListener("state", (ev) => {
    $("conn").dataset.state = ev.detail;
    $("conn").textContent = ev.detail === "connected" ? "connected" : ev.detail + "…";
  });
  state.client.addEventListener("unauthorized", signOut);
  await loadConversations();
  const fromHash = location.hash.slice(1);
  if (fromHash && state.conversations.some((c) => c.id === fromHash)) await openConversation(fromHash);
  else if (state.conversations.length > 0) await openConversation(state.conversations[0].id);
  else showEmpty();
  $("input").focus();
}

async function loadConversations() {
  const { conversations } = await api("GET", "/v1/conversations");
  state.conversations = conversations;
  renderConversations();
}

function renderConversations() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of state.conversations) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = c.title || "New chat";
    b.dataset.id = c.id;
    if (c.id === state.current) b.setAttribute("aria-current", "page");
    b.addEventListener("click", () => openConversation(c.id));
    li.append(b);
    ul.append(li);
  }
}

function showEmpty() {
  state.current = null;
  state.loaded = null;
  state.loadSeq++;
  state.order = [];
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

async function openConversation(id) {
  if (id === state.current && state.loaded === id) return; // already open
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
  await state.client.watch(id, onMessageEvent);
  if (seq !== state.loadSeq) return;
  const conv = await api("GET", "/v1/conversations/" + id);
  if (seq !== state.loadSeq) return;
  $("title").textContent = conv.title || "New chat";
  state.order = [];
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
}

// onMessageEvent applies a message event from any tab.
function onMessageEvent(m) {
  if (m.conversation_id !== state.current) return;
  if (state.loading) {
    state.loading.push(m);
    return;
  }
  const known = state.messages.get(m.id);
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

// upsert adds or updates a message of the open conversation.
function upsert(m) {
  const known = state.messages.get(m.id);
  if (known) {
    Object.assign(known, { status: m.status, error: m.error || null, content: m.content || known.content,
      parts: m.parts?.length ? copyParts(m.parts) : known.parts, usage: m.usage || known.usage || null });
  } else {
    state.messages.set(m.id, { ...m, parts: copyParts(m.parts), error: m.error || null, usage: m.usage || null,
      view: { thinking: new Map(), answering: new Set(), onAnswer: (callId, approved) => answerCall(m.id, callId, approved) } });
  }
  if (!state.order.includes(m.id)) {
    state.order.push(m.id);
    $("messages").append(messageElement(state.messages.get(m.id)));
  }
  renderMessage(m.id);
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

function renderMessage(id) {
  const m = state.messages.get(id);
  const el = document.getElementById("m-" + id);
  if (!m || !el) return;
  const body = el.querySelector(".body");
  if (m.role === "user") body.textContent = m.content;
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
  if (m.role === "assistant" && m.usage) {
    const usage = document.createElement("span");
    usage.className = "usage";
    usage.textContent = usageText(m.usage);
    meta.append(usage);
  }
  const box = $("messages");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

// --- composer ----------------------------------------------------------

function setBusy(streamId) {
  for (const m of state.messages.values()) m.busy = false;
  if (streamId) state.messages.get(streamId).busy = true;
  state.busy = streamId;
  $("stop").hidden = !streamId;
  $("send").hidden = !!streamId;
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
  t.style.height = Math.min(t.scrollHeight, 240) + "px";
});

$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const content = $("input").value;
  if (!content.trim() || state.busy) return;
  try {
    if (!state.current) {
      const conv = await api("POST", "/v1/conversations", { title: titleOf(content) });
      state.conversations.unshift(conv);
      await openConversation(conv.id);
    }
    state.sending = true;
    let acc;
    try {
      acc = await state.client.request({ type: "send", conversation_id: state.current, content });
    } finally {
      state.sending = false;
    }
    $("input").value = "";
    $("input").style.height = "auto";
    upsert(acc.user_message);
    upsert(acc.assistant_message);
    const m = state.messages.get(acc.stream_id);
    if (!m.following) {
      m.following = true;
      m.content = "";
      m.parts = [];
      state.client.adopt(acc.stream_id, (f) => onStreamFrame(acc.stream_id, f));
    }
    setBusy(acc.stream_id);
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

// titleOf is a new conversation's title: the start of its first message,
// past the demo model's settings line.
function titleOf(content) {
  const text = content.startsWith("/demo") && content.includes("\n") ? content.slice(content.indexOf("\n") + 1) : content;
  return (text.trim() || content.trim()).slice(0, 60);
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

if (state.token) start().catch((e) => { flash(e.message); });
else showSignIn();
