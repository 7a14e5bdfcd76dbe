// The page of `janusflow serve`: chat about pictures through /v1/chat/completions and image generation through
// /v1/generate, both streamed (server-sent events read from fetch, so that Stop can abort them), and /health for
// the model's name and the queue. Plain script, no libraries: it must work offline.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  modelName: "janusflow",
  apiKey: sessionStorage.getItem("janusflow-api-key") || "",
  history: [],       // OpenAI-style messages sent so far (user turns carry their images as data URLs)
  attachments: [],   // data URLs waiting for the next message
  chatJob: null,     // AbortController of the running answer
  generateJob: null, // AbortController of the running generation
};

// ---- Talking to the server -------------------------------------------------------------------------------------

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.apiKey) h["Authorization"] = "Bearer " + state.apiKey;
  return h;
}

// The server's words for a failed request: {"error": "..."} or OpenAI's {"error": {"message": ...}}.
async function errorText(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const error = body.error;
    if (typeof error === "string") return error;
    if (error && error.message) return error.message;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}${text ? ": " + text.slice(0, 300) : ""}`;
}

class RequestFailed extends Error {}

// POSTs `body` and hands every server-sent event to `onEvent(data, comment)`: `data` is the event's payload text,
// `comment` the text of a `: ...` line (the server's queue position). Throws RequestFailed with the server's words.
async function stream(path, body, signal, onEvent) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (response.status === 401) showKeyRow();
  if (!response.ok) throw new RequestFailed(await errorText(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith(":")) onEvent(null, line.slice(1).trim());
      }
      if (data.length) onEvent(data.join("\n"), null);
    }
  }
}

function queuedText(comment) {
  const match = /^queued (\d+)$/.exec(comment || "");
  if (!match) return null;
  const ahead = Number(match[1]);
  return ahead === 0 ? "Starting…" : `Waiting in the queue: ${ahead} ${ahead === 1 ? "request" : "requests"} ahead`;
}

async function refreshHealth() {
  const badge = $("server-state");
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const health = await response.json();
    state.modelName = health.model;
    $("model").textContent = `${health.model} · ${health.image_size} px`;
    const busy = health.queued > 0;
    badge.textContent = busy ? `busy: ${health.queued} running or waiting` : "idle";
    badge.className = "badge" + (busy ? " busy" : "");
    const canGenerate = health.generation;
    $("generate-button").disabled = !canGenerate || state.generateJob !== null;
    $("generate-button").title = canGenerate ? "" : "The server was started without --vae: generation is off";
    if (!canGenerate && !state.generateJob) setStatus("generate-status", "Generation is off: the server was started without a VAE (--vae).", true);
  } catch (_) {
    badge.textContent = "server unreachable";
    badge.className = "badge down";
  }
}

function showKeyRow() {
  $("key-row").hidden = false;
  $("api-key").focus();
}

function setStatus(id, text, isError = false) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle("error", isError);
}

// ---- Tabs ------------------------------------------------------------------------------------------------------

function selectTab(name) {
  for (const tab of ["chat", "generate"]) {
    $("tab-" + tab).setAttribute("aria-selected", String(tab === name));
    $(tab).hidden = tab !== name;
  }
  location.hash = name === "generate" ? "#generate" : "";
}

// ---- Chat ------------------------------------------------------------------------------------------------------

// Images as data URLs the server takes: PNG and JPEG as they are, anything else the browser can open as PNG.
function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.onload = () => {
      const url = reader.result;
      if (/^data:image\/(png|jpeg);/.test(url)) return resolve(url);
      const image = new Image();
      image.onerror = () => reject(new Error(`${file.name} is not an image this browser can open`));
      image.onload = () => {
        const canvas = document.createElement("canvas");
        canvas.width = image.naturalWidth;
        canvas.height = image.naturalHeight;
        canvas.getContext("2d").drawImage(image, 0, 0);
        resolve(canvas.toDataURL("image/png"));
      };
      image.src = url;
    };
    reader.readAsDataURL(file);
  });
}

async function addFiles(files) {
  for (const file of files) {
    try {
      state.attachments.push(await readImage(file));
    } catch (error) {
      setStatus("chat-status", error.message, true);
    }
  }
  renderAttachments();
}

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.attachments.forEach((url, index) => {
    const item = document.createElement("div");
    item.className = "attachment";
    const image = document.createElement("img");
    image.src = url;
    image.alt = `attached image ${index + 1}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "Remove";
    remove.addEventListener("click", () => { state.attachments.splice(index, 1); renderAttachments(); });
    item.append(image, remove);
    box.append(item);
  });
}

function addMessage(role, text, images = []) {
  $("chat-hint").hidden = true;
  const element = document.createElement("div");
  element.className = "message " + role;
  for (const url of images) {
    const image = document.createElement("img");
    image.src = url;
    image.alt = "your image";
    element.append(image);
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  element.append(body);
  $("messages").append(element);
  element.scrollIntoView({ block: "end" });
  return element;
}

function addNote(element, text) {
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = (element.querySelector(".text").textContent ? " " : "") + text;
  element.append(note);
}

function setChatRunning(running) {
  $("send").hidden = running;
  $("chat-stop").hidden = !running;
  $("question").disabled = running;
}

async function sendMessage() {
  const text = $("question").value.trim();
  if (!text && state.attachments.length === 0) return;
  const images = state.attachments.splice(0);
  renderAttachments();
  $("question").value = "";
  const content = [...images.map((url) => ({ type: "image_url", image_url: { url } })), { type: "text", text }];
  const userMessage = { role: "user", content };
  addMessage("user", text, images);
  const reply = addMessage("assistant", "");
  reply.classList.add("pending");
  const replyText = reply.querySelector(".text");

  const job = new AbortController();
  state.chatJob = job;
  setChatRunning(true);
  setStatus("chat-status", "Sending…");
  let answer = "", finished = false;
  try {
    const body = {
      model: state.modelName, messages: [...state.history, userMessage], stream: true,
      max_tokens: Number($("max-tokens").value), temperature: Number($("temperature").value), top_p: Number($("top-p").value),
    };
    await stream("/v1/chat/completions", body, job.signal, (data, comment) => {
      const waiting = queuedText(comment);
      if (waiting) return setStatus("chat-status", waiting);
      if (data === null) return;
      if (data === "[DONE]") { finished = true; return; }
      const event = JSON.parse(data);
      if (event.error) throw new RequestFailed(event.error.message || String(event.error));
      const choice = event.choices && event.choices[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) {
        answer += choice.delta.content;
        // Shown as the library and the non-streamed API give it: without the leading space of the first piece.
        replyText.textContent = answer.trimStart();
        setStatus("chat-status", "Answering…");
        reply.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason === "length") addNote(reply, "(stopped at the token limit)");
    });
    replyText.textContent = answer.trim();
    state.history.push(userMessage, { role: "assistant", content: answer.trim() });
    setStatus("chat-status", finished ? "" : "The answer ended early.", !finished);
  } catch (error) {
    if (error.name === "AbortError") {
      addNote(reply, "(stopped)");
      // The conversation goes on from what was said so far.
      state.history.push(userMessage, { role: "assistant", content: answer.trim() });
      setStatus("chat-status", "Stopped.");
    } else {
      reply.remove();
      addMessage("error", error instanceof RequestFailed ? error.message : `The server could not be reached: ${error.message}`);
      setStatus("chat-status", "");
    }
  } finally {
    job.abort(); // ends the request if an error event stopped reading it
    reply.classList.remove("pending");
    state.chatJob = null;
    setChatRunning(false);
    $("question").focus();
  }
}

function newChat() {
  if (state.chatJob) state.chatJob.abort();
  state.history = [];
  $("messages").querySelectorAll(".message").forEach((m) => m.remove());
  $("chat-hint").hidden = false;
  setStatus("chat-status", "");
}

// ---- Generation ------------------------------------------------------------------------------------------------

function setGenerating(running) {
  $("generate-button").hidden = running;
  $("generate-stop").hidden = !running;
  $("generate-button").disabled = running;
}

function seedValue() {
  const text = $("seed").value.trim();
  if (!/^\d+$/.test(text)) throw new RequestFailed("The seed must be a whole number from 0 up.");
  const number = Number(text);
  // Above 2^53 a JSON number loses digits: the server takes those as a decimal string.
  return Number.isSafeInteger(number) ? number : text;
}

function showImages(images, prompt, seed) {
  const gallery = $("gallery");
  gallery.replaceChildren();
  const stem = prompt.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "image";
  images.forEach((base64, index) => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = "data:image/png;base64," + base64;
    image.alt = `${prompt} (image ${index + 1})`;
    const caption = document.createElement("figcaption");
    const label = document.createElement("span");
    label.textContent = `seed ${seed} · ${index + 1} of ${images.length}`;
    const link = document.createElement("a");
    link.href = image.src;
    link.download = `${stem}-${seed}-${index + 1}.png`;
    link.textContent = "Download PNG";
    caption.append(label, link);
    figure.append(image, caption);
    gallery.append(figure);
  });
}

async function generate() {
  const prompt = $("prompt").value.trim();
  if (!prompt) return setStatus("generate-status", "Write a prompt first.", true);
  let seed;
  try { seed = seedValue(); } catch (error) { return setStatus("generate-status", error.message, true); }
  const body = {
    prompt, seed, stream: true, count: Number($("count").value), steps: Number($("steps").value), cfg: Number($("cfg").value),
  };
  const job = new AbortController();
  state.generateJob = job;
  setGenerating(true);
  $("progress-bar").style.width = "0";
  setStatus("generate-status", "Sending…");
  try {
    let result = null;
    await stream("/v1/generate", body, job.signal, (data, comment) => {
      const waiting = queuedText(comment);
      if (waiting) return setStatus("generate-status", waiting);
      if (data === null) return;
      const event = JSON.parse(data);
      if (event.error) throw new RequestFailed(event.error);
      if (event.step !== undefined) {
        $("progress-bar").style.width = `${(100 * event.step) / event.steps}%`;
        setStatus("generate-status", event.step < event.steps ? `Step ${event.step} of ${event.steps}` : "Decoding the images…");
      }
      if (event.done) result = event;
    });
    if (!result) throw new RequestFailed("The server closed the stream before the images were done.");
    showImages(result.images, prompt, result.seed);
    $("progress-bar").style.width = "100%";
    setStatus("generate-status", `Done in ${result.seconds.toFixed(1)} s.`);
  } catch (error) {
    $("progress-bar").style.width = "0";
    if (error.name === "AbortError") setStatus("generate-status", "Stopped.");
    else setStatus("generate-status", error instanceof RequestFailed ? error.message : `The server could not be reached: ${error.message}`, true);
  } finally {
    job.abort();
    state.generateJob = null;
    setGenerating(false);
    refreshHealth();
  }
}

// ---- Wiring ----------------------------------------------------------------------------------------------------

$("tab-chat").addEventListener("click", () => selectTab("chat"));
$("tab-generate").addEventListener("click", () => selectTab("generate"));
$("chat-form").addEventListener("submit", (event) => { event.preventDefault(); sendMessage(); });
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); sendMessage(); }
});
$("chat-stop").addEventListener("click", () => state.chatJob && state.chatJob.abort());
$("new-chat").addEventListener("click", newChat);
$("file-input").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
const dropZone = $("messages");
dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("dragging"); });
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  addFiles(event.dataTransfer.files);
});
$("generate-form").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
$("generate-stop").addEventListener("click", () => state.generateJob && state.generateJob.abort());
$("cfg").addEventListener("input", () => { $("cfg-value").textContent = Number($("cfg").value).toFixed(1); });
$("random-seed").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 2 ** 32)); });
$("save-key").addEventListener("click", () => {
  state.apiKey = $("api-key").value.trim();
  sessionStorage.setItem("janusflow-api-key", state.apiKey);
  $("key-row").hidden = true;
});

if (location.hash === "#generate") selectTab("generate");
refreshHealth();
setInterval(() => { if (!document.hidden) refreshHealth(); }, 3000);
