// A small Markdown renderer that builds DOM nodes with createElement and
// textContent only: no HTML string from a message is ever parsed, so no
// markup in a message can run. Supports what chat answers use: headings,
// paragraphs, lists, block quotes, fenced code, inline code, bold, italic,
// and http(s) links.

export function renderMarkdown(text, doc = document) {
  const root = doc.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)\s*$/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++; // the closing fence (or the end while streaming)
      const pre = doc.createElement("pre");
      const code = doc.createElement("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      root.append(pre);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      const h = doc.createElement("h" + Math.min(heading[1].length + 1, 6));
      appendInline(h, heading[2], doc);
      root.append(h);
      i++;
      continue;
    }
    if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d+[.)]\s+/.test(line);
      const list = doc.createElement(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
        const li = doc.createElement("li");
        appendInline(li, lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""), doc);
        list.append(li);
        i++;
      }
      root.append(list);
      continue;
    }
    if (/^>\s?/.test(line)) {
      const quote = doc.createElement("blockquote");
      const body = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) body.push(lines[i++].replace(/^>\s?/, ""));
      quote.append(renderMarkdown(body.join("\n"), doc));
      root.append(quote);
      continue;
    }
    if (line.trim() === "") {
      i++;
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() !== "" && !/^(\s*(```|~~~)|#{1,6}\s|\s*([-*+]|\d+[.)])\s+|>)/.test(lines[i])) {
      para.push(lines[i++]);
    }
    if (para.length === 0) para.push(lines[i++]);
    const p = doc.createElement("p");
    para.forEach((l, k) => {
      if (k > 0) p.append(doc.createElement("br"));
      appendInline(p, l, doc);
    });
    root.append(p);
  }
  return root;
}

// Inline spans: `code`, **bold**, *italic* / _italic_, [text](http…).
const INLINE = /(`+)([^`]+?)\1|\*\*(.+?)\*\*|__(.+?)__|\*([^*\s][^*]*?)\*|_([^_\s][^_]*?)_|\[([^\]]+)\]\((\S+?)\)/g;

function appendInline(parent, text, doc) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(doc.createTextNode(text.slice(last, m.index)));
    if (m[2] !== undefined) {
      const code = doc.createElement("code");
      code.textContent = m[2];
      parent.append(code);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const b = doc.createElement("strong");
      appendInline(b, m[3] ?? m[4], doc);
      parent.append(b);
    } else if (m[5] !== undefined || m[6] !== undefined) {
      const em = doc.createElement("em");
      appendInline(em, m[5] ?? m[6], doc);
      parent.append(em);
    } else {
      parent.append(link(m[7], m[8], doc));
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(doc.createTextNode(text.slice(last)));
}

// link returns an anchor for http(s) URLs only; anything else (javascript:,
// data:, …) stays text.
function link(label, href, doc) {
  let url;
  try {
    url = new URL(href);
  } catch {
    return doc.createTextNode(`[${label}](${href})`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return doc.createTextNode(`[${label}](${href})`);
  }
  const a = doc.createElement("a");
  a.href = url.href;
  a.textContent = label;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  return a;
}
