// The parts of an answer — text, reasoning, tool calls with their approval
// and result — built from its chunks as they stream, or taken from the
// stored message, and drawn the same way from either.
import { renderMarkdown } from "./markdown.js";

// partOfChunk (what a chunk frame carries, as a part) and addPart
// (consecutive text, or reasoning, deltas form one part, as the server
// builds them) are the client package's.
export { partOf as partOfChunk, addPart } from "./client/parts.js";

// copyParts is a deep enough copy of stored parts to extend.
export function copyParts(parts) {
  return (parts || []).map((p) => ({ ...p }));
}

// renderParts draws an answer's parts. view holds what the page remembers
// of the message: its status, the Thinking blocks the user opened or
// closed (thinking: index → open), the calls being answered (answering),
// and onAnswer(callId, approved), called by the Approve and Deny buttons.
export function renderParts(m, view) {
  const frag = document.createDocumentFragment();
  const streaming = m.status === "streaming" || m.status === "pending";
  const answers = new Map();
  const results = new Map();
  for (const p of m.parts) {
    if (p.type === "tool_approval") answers.set(p.call_id, p);
    if (p.type === "tool_result") results.set(p.call_id, p);
  }
  m.parts.forEach((p, i) => {
    const last = i === m.parts.length - 1;
    switch (p.type) {
      case "text":
        if (p.text) {
          const div = document.createElement("div");
          div.className = "text";
          div.append(renderMarkdown(p.text));
          frag.append(div);
        }
        break;
      case "reasoning":
        frag.append(thinking(p, i, streaming && last, view));
        break;
      case "tool_call":
        frag.append(toolCard(p, answers.get(p.call_id), results.get(p.call_id), streaming, view));
        break;
    }
  });
  return frag;
}

// thinking is a collapsible block of reasoning: open while it streams,
// closed once the answer goes on, unless the user chose.
function thinking(p, index, live, view) {
  const d = document.createElement("details");
  d.className = "thinking";
  if (live) d.classList.add("live");
  d.open = view.thinking.has(index) ? view.thinking.get(index) : live;
  const s = document.createElement("summary");
  s.textContent = "Thinking";
  // Only a click is the user's choice (the toggle event fires for ours too).
  s.addEventListener("click", () => view.thinking.set(index, !d.open));
  const body = document.createElement("div");
  body.className = "thinking-text";
  body.textContent = p.text.trimStart();
  d.append(s, body);
  return d;
}

// The states a tool call's card shows.
const TOOL_STATE = {
  waiting: "waiting for your approval",
  running: "running…",
  done: "done",
  error: "failed",
  denied: "denied",
  expired: "not approved in time",
  stopped: "not run",
};

function toolState(call, answer, result, streaming) {
  if (result) {
    if (answer && !answer.approved) return answer.reason === "expired" ? "expired" : "denied";
    return result.is_error ? "error" : "done";
  }
  if (!streaming) return "stopped";
  if (call.requires_approval && !answer) return "waiting";
  if (answer && !answer.approved) return answer.reason === "expired" ? "expired" : "denied";
  return "running";
}

// toolCard shows a tool call: its name, arguments, and its result or
// error; while it waits for approval, Approve and Deny.
function toolCard(call, answer, result, streaming, view) {
  const state = toolState(call, answer, result, streaming);
  const card = document.createElement("div");
  card.className = "tool";
  card.dataset.callId = call.call_id;
  card.dataset.state = state;
  const head = document.createElement("div");
  head.className = "tool-head";
  const name = document.createElement("span");
  name.className = "tool-name";
  name.textContent = call.name;
  const st = document.createElement("span");
  st.className = "tool-state";
  st.textContent = TOOL_STATE[state];
  head.append(name, st);
  const args = document.createElement("pre");
  args.className = "tool-args";
  args.textContent = prettyJSON(call.arguments);
  card.append(head, args);
  if (state === "waiting") {
    const actions = document.createElement("div");
    actions.className = "tool-actions";
    const busy = view.answering.has(call.call_id);
    for (const [label, approved, cls] of [["Approve", true, "primary approve"], ["Deny", false, "deny"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = cls;
      b.textContent = label;
      b.disabled = busy;
      b.addEventListener("click", () => view.onAnswer(call.call_id, approved));
      actions.append(b);
    }
    card.append(actions);
  }
  if (result) {
    const out = document.createElement("pre");
    out.className = "tool-output" + (result.is_error ? " error" : "");
    out.textContent = prettyJSON(result.output);
    card.append(out);
  }
  return card;
}

// prettyJSON indents JSON text; other text is shown as it is.
function prettyJSON(s) {
  try {
    const v = JSON.parse(s);
    if (v !== null && typeof v === "object") return JSON.stringify(v, null, 2);
  } catch {
    // not JSON
  }
  return s;
}

// usageText is the token usage of an answer, for under it.
export function usageText(u) {
  if (!u) return "";
  return `${u.total_tokens} tokens · ${u.prompt_tokens} in · ${u.completion_tokens} out`;
}
