/* The Text page: a completion or a chat, streamed as it is generated and stoppable; its settings,
 * stop sequences as chips, the result bar (tokens, speed, seed, rating), and filling the form
 * from a recorded generation (History's Restore). */

import { $, $$, h, icon, enc, fmtNum, notify, reportError } from "./dom.js";
import { ApiError, api, request, sseData } from "./api.js";
import { selectModel } from "./catalog.js";
import { feedbackWidget, readNumber, readSeed, setSeed, wireSeed } from "./widgets.js";

let textAbort = null; // the AbortController of the generation in flight
let stops = []; // the stop sequences shown as chips

const textMode = () => $("input[name=text-mode]:checked").value;

function setTextMode(mode) {
  $$("input[name=text-mode]").forEach((r) => { r.checked = r.value === mode; });
  $("#text-prompt-field").hidden = mode === "chat";
  $("#text-chat-field").hidden = mode !== "chat";
  if (mode === "chat" && !$$(".chat-msg").length) addChatMessage("user", "");
}

function addChatMessage(role, content) {
  const roleSelect = h("select", { class: "chat-role", "aria-label": "Role" },
    ...["system", "user", "assistant"].map((r) => h("option", { value: r }, r)));
  roleSelect.value = role;
  const text = h("textarea", { class: "chat-content", rows: 2, "aria-label": "Message", placeholder: "Message" });
  text.value = content;
  const row = h("div", { class: "chat-msg" }, roleSelect, text,
    h("button", { type: "button", class: "btn btn-sm btn-icon", title: "Remove", "aria-label": "Remove message",
      onclick: () => row.remove() }, "×"));
  $("#chat-messages").append(row);
  return row;
}

const readChat = () => $$(".chat-msg").map((row) => ({
  role: $(".chat-role", row).value, content: $(".chat-content", row).value,
}));

// Stop sequences are chips; "\n" and "\t" typed in the box mean newline and tab.
const unescapeStop = (s) => s.replace(/\\(n|t|\\)/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
const escapeStop = (s) => s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t");

function renderStops() {
  const box = $("#text-stop-chips");
  const input = $("#text-stop-input");
  $$(".chip", box).forEach((c) => c.remove());
  stops.forEach((stop, i) => {
    box.insertBefore(h("span", { class: "chip" }, escapeStop(stop),
      h("button", { type: "button", "aria-label": "Remove stop sequence",
        onclick: () => { stops.splice(i, 1); renderStops(); } }, "×")), input);
  });
  input.disabled = stops.length >= 4;
  input.placeholder = stops.length >= 4 ? "" : "add…";
}

function readTextParams() {
  const params = {
    max_tokens: readNumber("text-max-tokens", "Max tokens", { integer: true, fallback: 16 }),
    temperature: readNumber("text-temperature", "Temperature", { fallback: 1 }),
    top_p: readNumber("text-top-p", "Top p", { fallback: 1 }),
    top_k: readNumber("text-top-k", "Top k", { integer: true }),
    repetition_penalty: readNumber("text-repetition-penalty", "Repetition penalty", { fallback: 1 }),
    stop: stops.length ? [...stops] : null,
    seed: readSeed("text"),
    n: 1,
  };
  for (const key of ["top_k", "stop", "seed"]) if (params[key] == null) delete params[key];
  return params;
}

function setTextBusy(busy, status) {
  $("#text-generate").disabled = busy;
  $("#text-stop").disabled = !busy;
  const s = $("#text-status");
  s.textContent = status || "";
  s.classList.toggle("busy", busy);
}

async function generateText() {
  const model = $("#text-model").value;
  if (!model) return notify("Pick a text model first (none is registered yet: `genloop train ...`).");
  const chat = textMode() === "chat";
  let body;
  try {
    body = { model, ...readTextParams(), stream: true, stream_options: { include_usage: true } };
    if (chat) body.messages = readChat();
    else body.prompt = $("#text-prompt").value;
  } catch (err) {
    return notify(err.message);
  }

  const out = $("#text-output");
  const generated = document.createTextNode("");
  out.replaceChildren(
    chat ? "" : h("span", { class: "prompt-echo" }, body.prompt),
    h("span", { class: "generated" }, generated));
  out.dataset.state = "streaming";
  $("#text-result").hidden = true;
  $("#text-result").replaceChildren();

  const abort = new AbortController();
  textAbort = abort;
  setTextBusy(true, "Generating…");
  const t0 = performance.now();
  let firstAt = null;
  let generationId = null;
  let finish = null;
  let usage = null;
  let finished = false;
  try {
    const res = await request(chat ? "v1/chat/completions" : "v1/completions",
      { method: "POST", body, signal: abort.signal });
    for await (const data of sseData(res.body)) {
      if (abort.signal.aborted) throw new DOMException("stopped", "AbortError");
      if (data === "[DONE]") { finished = true; break; }
      let chunk;
      try { chunk = JSON.parse(data); } catch (_) { throw new Error("The server sent an event that is not JSON."); }
      if (chunk.error) throw new ApiError(chunk.error.message || "Generation failed on the server.", 0);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const piece = chat ? (choice.delta && choice.delta.content) || "" : choice.text || "";
        if (piece) {
          firstAt = firstAt ?? performance.now();
          generated.appendData(piece);
          out.scrollTop = out.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
        if (choice.generation_id) generationId = choice.generation_id;
      }
      if (chunk.generation_id) generationId = chunk.generation_id;
    }
    if (!finished) throw new Error("The stream ended early (no [DONE]): the output may be incomplete.");
    out.dataset.state = "done";
    setTextBusy(false, "");
    showTextResult({ generationId, finish, usage, total: performance.now() - t0,
      first: firstAt == null ? null : firstAt - t0 });
  } catch (err) {
    out.dataset.state = "done";
    if (err.name === "AbortError") setTextBusy(false, "Stopped — a stopped generation is not recorded.");
    else { setTextBusy(false, "Failed."); reportError(err); }
  } finally {
    if (textAbort === abort) textAbort = null;
  }
}

function showTextResult({ generationId, finish, usage, total, first }) {
  const bar = $("#text-result");
  if (!generationId) {
    bar.replaceChildren(h("span", { class: "meta" }, "Done (the server sent no generation id)."));
    bar.hidden = false;
    return;
  }
  const seedSlot = h("span", { class: "seed-slot" });
  const safetySlot = h("div", { class: "withheld", hidden: true, role: "status" });
  const tokens = usage ? usage.completion_tokens : null;
  const stats = h("div", { class: "meta" },
    finish ? h("span", { class: "pill", title: `finish_reason: ${finish}` },
      finish === "length" ? "hit max tokens" : finish === "content_filter" ? "withheld" : "finished") : null,
    tokens != null ? h("span", null, `${tokens} tokens`) : null,
    tokens != null && total > 0 ? h("span", null, `${fmtNum(tokens / (total / 1000))} tok/s`) : null,
    first != null ? h("span", null, `first token ${Math.round(first)} ms`) : null,
    seedSlot);
  const id = h("div", { class: "meta" },
    h("span", null, "Generation ", h("span", { class: "mono generation-id", dataset: { generationId } }, generationId)),
    h("button", { type: "button", class: "btn btn-sm btn-icon", title: "Copy id", "aria-label": "Copy generation id",
      onclick: () => navigator.clipboard && navigator.clipboard.writeText(generationId).catch(() => {}) }, icon("copy")));
  bar.replaceChildren(stats, safetySlot, h("div", { class: "result-foot" }, id,
    h("div", { class: "rate-row" }, h("span", { class: "rate-label" }, "Rate this output"), feedbackWidget(generationId))));
  bar.hidden = false;
  // The seed the server used (random ones included), so this output can be reproduced.
  api(`v1/generations/${enc(generationId)}`).then((gen) => {
    showSafety(safetySlot, gen.safety);
    seedSlot.replaceChildren("seed ", h("span", { class: "mono" }, String(gen.seed)),
      h("button", { type: "button", class: "btn btn-ghost btn-sm", title: "Use this seed",
        onclick: () => setSeed("text", gen.seed) }, "reuse"));
  }).catch(() => {});
}

/** Why moderation withheld or redacted an output: the reason its record keeps (never the text). */
export function safetyNote(safety) {
  const output = safety && safety.output;
  if (!output || output.action === "allow") return null;
  const text = safety.withheld
    ? `Output withheld by the moderation policy — ${output.reason}.`
    : `Output ${output.reason} by the moderation policy.`;
  return h("span", { class: safety.withheld ? "pill pill-warn" : "pill", title: `policy ${output.policy}` }, text);
}

function showSafety(slot, safety) {
  const note = safetyNote(safety);
  if (!note) return;
  slot.replaceChildren(note);
  slot.hidden = false;
  if (safety.withheld) $("#text-output").textContent = "";  // nothing of it is shown
}

export function fillTextForm(gen) {
  const req = gen.request || {};
  selectModel($("#text-model"), gen.model);
  if (Array.isArray(req.messages)) {
    setTextMode("chat");
    $("#chat-messages").replaceChildren();
    req.messages.forEach((m) => addChatMessage(m.role, m.content ?? ""));
  } else {
    setTextMode("completion");
    $("#text-prompt").value = Array.isArray(req.prompt) ? req.prompt[0] ?? "" : req.prompt ?? "";
  }
  const set = (id, v) => { $(`#${id}`).value = v == null ? "" : String(v); };
  set("text-max-tokens", req.max_tokens ?? req.max_new_tokens ?? 16);
  set("text-temperature", req.temperature ?? 1);
  syncTemperature("number");
  set("text-top-p", req.top_p ?? 1);
  set("text-top-k", req.top_k);
  set("text-repetition-penalty", req.repetition_penalty ?? 1);
  stops = req.stop == null ? [] : Array.isArray(req.stop) ? [...req.stop] : [req.stop];
  renderStops();
  setSeed("text", gen.seed ?? req.seed ?? null);
}

function syncTemperature(from) {
  const num = $("#text-temperature");
  const range = $("#text-temperature-range");
  if (from === "range") num.value = range.value;
  else range.value = num.value;
  $("#text-temperature-out").textContent = num.value;
}

export function wireTextPage() {
  $$("input[name=text-mode]").forEach((r) => r.addEventListener("change", () => setTextMode(textMode())));
  $("#chat-add").addEventListener("click", () => $(".chat-content", addChatMessage("user", "")).focus());
  $("#text-generate").addEventListener("click", generateText);
  $("#text-stop").addEventListener("click", () => textAbort && textAbort.abort());
  $("#text-temperature-range").addEventListener("input", () => syncTemperature("range"));
  $("#text-temperature").addEventListener("input", () => syncTemperature("number"));
  $("#text-prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("#text-generate").disabled) generateText();
  });
  const stopInput = $("#text-stop-input");
  stopInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && stopInput.value !== "") {
      e.preventDefault();
      const stop = unescapeStop(stopInput.value);
      if (!stops.includes(stop) && stops.length < 4) stops.push(stop);
      stopInput.value = "";
      renderStops();
    } else if (e.key === "Backspace" && stopInput.value === "" && stops.length) {
      stops.pop();
      renderStops();
    }
  });
  wireSeed("text");
  syncTemperature("number");
}
