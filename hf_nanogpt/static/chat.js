// hf_nanogpt chat page: keeps the conversation in memory, sends it to /v1/chat/completions with
// stream: true and appends each server-sent `delta.content` to the reply as it arrives. Stop aborts
// the request (the server then cancels the generation and frees its worker).
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];  // OpenAI-style messages: {role, content}
let controller = null;    // AbortController of the request in flight
let chatEpoch = 0;        // bumped by "New chat", so a reply that ends later stays out of the new one

// Render reply text; calculator blocks the model wrote become styled spans. DOM nodes only (never
// innerHTML), so model output cannot inject markup.
const TOOL_BLOCK = /<\|(python|output)_start\|>([\s\S]*?)(<\|\1_end\|>|$)/g;
function render(element, text) {
  element.replaceChildren();
  let pos = 0;
  for (const match of text.matchAll(TOOL_BLOCK)) {
    if (match.index > pos) element.append(text.slice(pos, match.index));
    const span = document.createElement("span");
    span.className = match[1] === "python" ? "tool-call" : "tool-output";
    span.textContent = match[2];
    element.append(span);
    pos = match.index + match[0].length;
  }
  if (pos < text.length) element.append(text.slice(pos));
}

function addMessage(role, text) {
  const element = document.createElement("div");
  element.className = `message ${role}`;
  render(element, text);
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

async function send(text) {
  conversation.push({role: "user", content: text});
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  bubble.dataset.state = "streaming";
  let reply = "";
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
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    for await (const data of serverSentEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices) {
        if (choice.delta && choice.delta.content) {
          reply += choice.delta.content;
          render(bubble, reply);
          bubble.scrollIntoView({block: "end"});
        }
      }
    }
    bubble.dataset.state = "done";
  } catch (err) {
    bubble.dataset.state = err.name === "AbortError" ? "stopped" : "error";
    if (err.name !== "AbortError") addMessage("error", String(err.message || err));
  } finally {
    // The (possibly partial) reply stays in the history so the conversation can go on.
    if (epoch === chatEpoch) conversation.push({role: "assistant", content: reply});
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
});

// Show the model name, and the API key field when the server asks for one.
fetch("/health").then((r) => r.json()).then((health) => {
  $("model-name").textContent = health.model;
  $("api-key-field").hidden = !health.auth;
}).catch(() => {});
