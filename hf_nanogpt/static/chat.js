// hf_nanogpt chat page: keeps the conversation in memory, sends it to /v1/chat/completions with
// stream: true and appends each server-sent delta to the reply as it arrives. Stop aborts the request
// (the server then cancels the generation and frees its worker). A turn that fails is taken out of the
// conversation again (its text goes back into the input box); when the conversation no longer fits the
// model's context the page says to start a New chat.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];  // OpenAI-style messages: {role, content[, raw_content]}
let controller = null;    // AbortController of the request in flight
let chatEpoch = 0;        // bumped by "New chat", so a reply that ends later stays out of the new one

// Render a reply from its raw text (`delta.raw_content`: calculator blocks as the model wrote them).
// The text shown is the server's readable `content` (hf_nanogpt/server_schema.py, readable_text): a call
// reads "calc: <expr>", its result " = <value>", and text right after a tool block starts on a new line.
// DOM nodes only (never innerHTML), so model output cannot inject markup.
const TOOL_BLOCK = /<\|(python|output)_start\|>([\s\S]*?)(<\|\1_end\|>|$)/g;
const OTHER_CONTROL = /<\|(bos|user_start|user_end|assistant_start|assistant_end)\|>/g;
function render(element, raw) {
  element.replaceChildren();
  let pos = 0, last = "", afterTool = false;
  const text = (piece) => {
    piece = piece.replace(OTHER_CONTROL, "");
    if (!piece) return;
    if (afterTool && !/^\s/.test(piece)) piece = "\n" + piece;
    element.append(piece);
    afterTool = false;
    last = piece.slice(-1);
  };
  for (const match of raw.matchAll(TOOL_BLOCK)) {
    text(raw.slice(pos, match.index));
    const call = match[1] === "python";
    const span = document.createElement("span");
    span.className = call ? "tool-call" : "tool-output";
    const sep = call && last && !/\s/.test(last) ? "\n" : "";
    span.textContent = (call ? "calc: " : " = ") + match[2].replace(OTHER_CONTROL, "");
    if (sep) element.append(sep);
    element.append(span);
    last = span.textContent.slice(-1);
    afterTool = match[3] !== "";  // a closed block; an unclosed one is still being written
    pos = match.index + match[0].length;
  }
  text(raw.slice(pos));
}

function addMessage(role, text) {
  const element = document.createElement("div");
  element.className = `message ${role}`;
  if (role === "assistant") render(element, text);
  else element.textContent = text;  // the user's own words, shown as typed
  $("messages").append(element);
  element.scrollIntoView({block: "end"});
  return element;
}

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = `Bearer ${key}`;
  return h;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").hidden = !busy;
}

// Read an SSE body: events are separated by a blank line; each carries one `data: ...` line.
async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

// Tell the user what went wrong; a conversation past the model's context can only start over.
function showError(message, code) {
  const full = code === "context_length_exceeded";
  const element = addMessage("error", full
    ? `The conversation no longer fits the model's context. Start a New chat to go on. (${message})`
    : message);
  if (full) {
    element.dataset.code = code;
    $("new-chat").classList.add("suggested");
  }
}

async function send(text) {
  conversation.push({role: "user", content: text});
  const question = addMessage("user", text);
  const bubble = addMessage("assistant", "");
  bubble.dataset.state = "streaming";
  let content = "", raw = "";
  const epoch = chatEpoch;
  controller = new AbortController();
  setBusy(true);
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        messages: conversation,
        stream: true,
        temperature: Number($("temperature").value),
        max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const error = new Error(body.error ? body.error.message : `HTTP ${response.status}`);
      error.code = body.error && body.error.code;
      throw error;
    }
    for await (const data of serverSentEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices) {
        const delta = choice.delta || {};
        if (delta.content || delta.raw_content) {
          content += delta.content || "";
          raw += delta.raw_content !== undefined ? delta.raw_content : (delta.content || "");
          render(bubble, raw);
          bubble.scrollIntoView({block: "end"});
        }
      }
    }
    bubble.dataset.state = "done";
    if (epoch === chatEpoch) conversation.push({role: "assistant", content, raw_content: raw});
  } catch (err) {
    if (err.name === "AbortError") {
      // Stop: the partial reply stays in the history so the conversation can go on
      bubble.dataset.state = "stopped";
      if (epoch === chatEpoch) conversation.push({role: "assistant", content, raw_content: raw});
    } else {
      // a failed turn leaves no trace: out of the history and off the page, its text back in the box
      if (epoch === chatEpoch) {
        conversation.pop();
        question.remove();
        bubble.remove();
        if (!$("input").value) $("input").value = text;
      }
      showError(String(err.message || err), err.code);
    }
  } finally {
    controller = null;
    setBusy(false);
    $("input").focus();
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});

$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("stop").addEventListener("click", () => controller && controller.abort());

$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  chatEpoch += 1;
  conversation.length = 0;
  $("messages").replaceChildren();
  $("new-chat").classList.remove("suggested");
});

// Show the model name, and the API key field when the server asks for one.
fetch("/health").then((r) => r.json()).then((health) => {
  $("model-name").textContent = health.model;
  $("api-key-field").hidden = !health.auth;
}).catch(() => {});
