// Parts: what a chunk frame carries, as the contract types it.

/**
 * @typedef {{type: "text", text: string}} TextPart
 * @typedef {{type: "reasoning", text: string}} ReasoningPart
 * @typedef {{type: "tool_call", call_id: string, name: string, arguments: string, requires_approval?: boolean}} ToolCallPart
 * @typedef {{type: "tool_approval", call_id: string, approved: boolean, reason: "user" | "expired"}} ToolApprovalPart
 * @typedef {{type: "tool_result", call_id: string, name: string, output: string, is_error?: boolean}} ToolResultPart
 * @typedef {TextPart | ReasoningPart | ToolCallPart | ToolApprovalPart | ToolResultPart} Part
 */

/**
 * partOf returns the part a chunk frame carries.
 * @param {any} f a chunk frame
 * @returns {Part}
 */
export function partOf(f) {
  switch (f.kind) {
    case "reasoning":
      return { type: "reasoning", text: f.reasoning ?? "" };
    case "tool_call":
      return { type: "tool_call", ...f.tool_call };
    case "tool_approval":
      return { type: "tool_approval", ...f.tool_approval };
    case "tool_result":
      return { type: "tool_result", ...f.tool_result };
    default:
      return { type: "text", text: f.content ?? "" };
  }
}

/**
 * addPart appends part p to parts, joining it to the last part when both
 * are text, or both reasoning: the parts Postgres stores.
 * @param {Part[]} parts
 * @param {Part} p
 */
export function addPart(parts, p) {
  const last = parts.at(-1);
  if ((p.type === "text" || p.type === "reasoning") && last && last.type === p.type) {
    last.text += p.text;
  } else if (p.type !== "text" || p.text !== "") {
    parts.push({ ...p });
  }
  return parts;
}

/**
 * textOf is the text parts of parts joined: a message's content.
 * @param {Part[]} parts
 */
export function textOf(parts) {
  return parts.map((p) => (p.type === "text" ? p.text : "")).join("");
}
