/* genloop studio: a single page over the HTTP API (docs/api.md), vanilla JS, no build step.
 *
 * Two rules hold everywhere in this file:
 * - Server data (model output, prompts, cards, error messages) only ever reaches the page as
 *   text: through h() below, which appends strings as text nodes, or textContent. No innerHTML:
 *   generated text may well contain "<script>".
 * - The key is never handled here. The browser's HTTP Basic auth (the key as password) covers
 *   every fetch of the page; every URL is relative to the page, so the API is found beside it.
 */
"use strict";

(() => {
  // ------------------------------------------------------------------ DOM helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  /** Create an element; string children become text nodes, never markup. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICONS = {
    star: { polygon: "12 2 15.09 8.26 22 9.27 17 14.14 18.18 21.02 12 17.77 5.82 21.02 7 14.14 2 9.27 8.91 8.26 12 2" },
    up: { path: "M7 10v11M14 9V5a3 3 0 0 0-3-3l-4 8v11h11.3a2 2 0 0 0 2-1.7l1.4-9A2 2 0 0 0 19.7 9z" },
    down: { path: "M17 14V3M10 15v4a3 3 0 0 0 3 3l4-8V3H5.7a2 2 0 0 0-2 1.7l-1.4 9A2 2 0 0 0 4.3 16z" },
    download: { path: "M12 3v12M7 10l5 5 5-5M4 21h16" },
    restore: { path: "M3 12a9 9 0 1 0 3-6.7L3 8M3 3v5h5" },
    copy: { path: "M9 9h11v11H9zM5 15H4V4h11v1" },
  };

  /** A small inline icon from the fixed set above (constants, never server data). */
  function icon(name) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.classList.add("icon", `icon-${name}`);
    const spec = ICONS[name];
    const shape = document.createElementNS(SVG_NS, spec.polygon ? "polygon" : "path");
    shape.setAttribute(spec.polygon ? "points" : "d", spec.polygon || spec.path);
    svg.append(shape);
    return svg;
  }

  const enc = encodeURIComponent;
  const truncate = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

  function fmtNum(v) {
    if (typeof v !== "number") return typeof v === "object" ? JSON.stringify(v) : String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return String(Number(v.toPrecision(4)));
  }

  /** `created` is unix seconds (OpenAI style) or an ISO string; either way a Date. */
  function toDate(created) {
    if (typeof created === "number") return new Date(created * 1000);
    return new Date(created);
  }

  function fmtTime(created) {
    const d = toDate(created);
    if (Number.isNaN(d.getTime())) return String(created ?? "");
    const today = new Date().toDateString() === d.toDateString();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return today ? time : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  // ------------------------------------------------------------------ messages

  /** Show a dismissable message; errors stay until dismissed, info fades after a few seconds. */
  function notify(text, kind = "error") {
    const box = h("div", { class: `msg msg-${kind}`, role: kind === "error" ? "alert" : "status" },
      h("span", { class: "msg-text", text }),
      h("button", { type: "button", class: "msg-close", "aria-label": "Dismiss", onclick: () => box.remove() }, "×"));
    $("#messages").append(box);
    if (kind !== "error") setTimeout(() => box.remove(), 5000);
    return box;
  }

  function reportError(err) {
    if (err && err.name === "AbortError") return;
    console.error(err);
    notify(err && err.message ? err.message : String(err));
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  /** The API's `error.message`, or the HTTP status when the body is not the error object. */
  async function errorFrom(res) {
    let message = `${res.status} ${res.statusText || "error"}`;
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    if (res.status === 401) message += " — reload the page to enter the API key again.";
    return new ApiError(message, res.status);
  }

  // Seeds go up to 2^63 − 1, beyond the integers a JS number holds exactly (2^53). They travel
  // as digit strings inside the page and as JSON numbers on the wire, so a restored seed
  // reproduces its output exactly.
  const parseJson = (text) => JSON.parse(text.replace(/("seed"\s*:\s*)(\d{16,})/g, '$1"$2"'));

  function toJson(body) {
    if (typeof body.seed !== "string") return JSON.stringify(body);
    if (!/^\d+$/.test(body.seed)) throw new ApiError(`Seed: "${body.seed}" is not a whole number.`, 0);
    // the top-level key is the only unescaped `"seed":0` in the text (quotes in strings are escaped)
    return JSON.stringify({ ...body, seed: 0 }).replace('"seed":0', `"seed":${body.seed}`);
  }

  /** fetch() a path relative to the page; throws ApiError unless the response is 2xx. */
  async function request(path, { method = "GET", body, signal } = {}) {
    const init = { method, signal, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = toJson(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`Cannot reach the server (${err.message}). Is \`genloop serve\` running?`, 0);
    }
    if (!res.ok) throw await errorFrom(res);
    return res;
  }

  const api = async (path, opts) => parseJson(await (await request(path, opts)).text());

  /** Server-sent events of a fetch() body: yields the data of each event ("[DONE]" included),
   * skips comments such as ": keep-alive". */
  async function* sseData(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        // at the end a blank line dispatches an event the server left unterminated
        buffer += done ? decoder.decode() + "\n\n" : decoder.decode(value, { stream: true });
        for (;;) {
          const cut = buffer.search(/[\r\n]/);
          if (cut < 0 || (!done && cut === buffer.length - 1 && buffer[cut] === "\r")) break;
          const line = buffer.slice(0, cut);
          buffer = buffer.slice(buffer.startsWith("\r\n", cut) ? cut + 2 : cut + 1);
          if (line === "") {
            if (data.length) yield data.join("\n");
            data = [];
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? "" : line.slice(colon + 1);
            if (val.startsWith(" ")) val = val.slice(1);
            if (field === "data") data.push(val);
          }
        }
        if (done) break;
      }
      if (data.length) yield data.join("\n");
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // ------------------------------------------------------------------ shared state

  const state = {
    models: [],
    modelsReady: null,
    textAbort: null,
    stops: [],
    history: { before: null, picked: [], rows: new Map(), blobUrls: [] },
  };

  const modelById = (id) => state.models.find((m) => m.id === id);

  async function loadModels() {
    const list = await api("v1/models");
    state.models = list.data || [];
    fillModelSelect($("#text-model"), "text");
    fillModelSelect($("#image-model"), "image");
    const filter = $("#history-model");
    const keep = filter.value;
    filter.replaceChildren(h("option", { value: "" }, "All models"),
      ...state.models.map((m) => h("option", { value: m.id }, m.id)));
    filter.value = keep;
    fillClasses();
  }

  function fillModelSelect(select, modality) {
    const keep = select.value;
    const models = state.models.filter((m) => m.modality === modality && m.generative !== false);
    if (!models.length) {
      select.replaceChildren(h("option", { value: "" }, `No ${modality} models — train one with \`genloop train\``));
      return;
    }
    select.replaceChildren(...models.map((m) =>
      h("option", { value: m.id }, `${m.id}${m.latest ? "  · latest" : ""}  — ${m.family}`)));
    if (keep && models.some((m) => m.id === keep)) select.value = keep;
  }

  /** Select `id` in a model select, adding it when the server no longer lists it. */
  function selectModel(select, id) {
    if (!$$("option", select).some((o) => o.value === id)) {
      select.append(h("option", { value: id }, `${id} (not served)`));
    }
    select.value = id;
  }

  // ------------------------------------------------------------------ feedback widget

  /** Stars 1–5 and thumbs up/down for one generation; each click is one POST, confirmed inline. */
  function feedbackWidget(generationId, { compact = false } = {}) {
    const confirm = h("span", { class: "confirm", role: "status" });
    const stars = [1, 2, 3, 4, 5].map((n) => h("button", {
      type: "button", class: "star", title: `Rate ${n} of 5`,
      "aria-label": `Rate ${n} star${n > 1 ? "s" : ""}`, dataset: { rating: n },
    }, icon("star")));
    const thumbs = [["up", "Thumbs up"], ["down", "Thumbs down"]].map(([dir, label]) => h("button", {
      type: "button", class: `thumb thumb-${dir}`, title: label, "aria-label": label, dataset: { thumbs: dir },
    }, icon(dir)));
    const box = h("div", { class: `feedback${compact ? " compact" : ""}`, dataset: { generationId } },
      ...stars, h("span", { class: "sep" }), ...thumbs, confirm);

    const paint = (upTo, cls) => stars.forEach((s, i) => s.classList.toggle(cls, i < upTo));
    stars.forEach((s, i) => {
      s.addEventListener("mouseenter", () => paint(i + 1, "hover"));
      s.addEventListener("mouseleave", () => paint(0, "hover"));
    });

    async function send(body, done) {
      try {
        await api(`v1/generations/${enc(generationId)}/feedback`, { method: "POST", body });
        done();
      } catch (err) {
        confirm.textContent = "";
        reportError(err);
      }
    }
    stars.forEach((s, i) => s.addEventListener("click", () => send({ rating: i + 1 }, () => {
      paint(i + 1, "on");
      confirm.textContent = compact ? `✓ ${i + 1}★` : `Saved: ${i + 1} of 5`;
    })));
    thumbs.forEach((t) => t.addEventListener("click", () => send({ thumbs: t.dataset.thumbs }, () => {
      thumbs.forEach((o) => o.classList.toggle("on", o === t));
      confirm.textContent = compact ? "✓" : `Saved: thumbs ${t.dataset.thumbs}`;
    })));
    return box;
  }

  /** Fetch a stored output (PNG) with the page's auth and hand it to the browser as a file. */
  async function downloadContent(generationId, filename) {
    const res = await request(`v1/generations/${enc(generationId)}/content`);
    const url = URL.createObjectURL(await res.blob());
    const a = h("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30_000);
  }

  // ------------------------------------------------------------------ seed inputs

  function wireSeed(prefix) {
    const input = $(`#${prefix}-seed`);
    const random = $(`#${prefix}-seed-random`);
    random.addEventListener("change", () => {
      input.disabled = random.checked;
      if (!random.checked) input.focus();
    });
  }

  function setSeed(prefix, seed) {
    const random = $(`#${prefix}-seed-random`);
    const input = $(`#${prefix}-seed`);
    random.checked = seed == null;
    input.disabled = random.checked;
    input.value = seed == null ? "" : String(seed);
  }

  /** The seed to send: null when "random" is ticked (the server picks one and records it). */
  function readSeed(prefix) {
    if ($(`#${prefix}-seed-random`).checked) return null;
    const raw = $(`#${prefix}-seed`).value.trim();
    if (raw === "") throw new Error("Seed: enter a whole number, or tick \"Random\".");
    if (!/^\d+$/.test(raw)) throw new Error("Seed: must be a whole number ≥ 0.");
    return Number.isSafeInteger(Number(raw)) ? Number(raw) : raw; // big ones stay exact digits
  }

  /** A number field; blank gives `fallback` (null = leave the setting to the server). */
  function readNumber(id, label, { integer = false, fallback = null } = {}) {
    const raw = $(`#${id}`).value.trim();
    if (raw === "") return fallback;
    const v = Number(raw);
    if (!Number.isFinite(v) || (integer && !Number.isInteger(v))) {
      throw new Error(`${label}: "${raw}" is not a ${integer ? "whole number" : "number"}.`);
    }
    return v;
  }

  // ------------------------------------------------------------------ Text page

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
    state.stops.forEach((stop, i) => {
      box.insertBefore(h("span", { class: "chip" }, escapeStop(stop),
        h("button", { type: "button", "aria-label": "Remove stop sequence",
          onclick: () => { state.stops.splice(i, 1); renderStops(); } }, "×")), input);
    });
    input.disabled = state.stops.length >= 4;
    input.placeholder = state.stops.length >= 4 ? "" : "add…";
  }

  function readTextParams() {
    const params = {
      max_tokens: readNumber("text-max-tokens", "Max tokens", { integer: true, fallback: 16 }),
      temperature: readNumber("text-temperature", "Temperature", { fallback: 1 }),
      top_p: readNumber("text-top-p", "Top p", { fallback: 1 }),
      top_k: readNumber("text-top-k", "Top k", { integer: true }),
      repetition_penalty: readNumber("text-repetition-penalty", "Repetition penalty", { fallback: 1 }),
      stop: state.stops.length ? [...state.stops] : null,
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
    state.textAbort = abort;
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
      if (state.textAbort === abort) state.textAbort = null;
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
    const tokens = usage ? usage.completion_tokens : null;
    const stats = h("div", { class: "meta" },
      finish ? h("span", { class: "pill", title: `finish_reason: ${finish}` },
        finish === "length" ? "hit max tokens" : "finished") : null,
      tokens != null ? h("span", null, `${tokens} tokens`) : null,
      tokens != null && total > 0 ? h("span", null, `${fmtNum(tokens / (total / 1000))} tok/s`) : null,
      first != null ? h("span", null, `first token ${Math.round(first)} ms`) : null,
      seedSlot);
    const id = h("div", { class: "meta" },
      h("span", null, "Generation ", h("span", { class: "mono generation-id", dataset: { generationId } }, generationId)),
      h("button", { type: "button", class: "btn btn-sm btn-icon", title: "Copy id", "aria-label": "Copy generation id",
        onclick: () => navigator.clipboard && navigator.clipboard.writeText(generationId).catch(() => {}) }, icon("copy")));
    bar.replaceChildren(stats, h("div", { class: "result-foot" }, id,
      h("div", { class: "rate-row" }, h("span", { class: "rate-label" }, "Rate this output"), feedbackWidget(generationId))));
    bar.hidden = false;
    // The seed the server used (random ones included), so this output can be reproduced.
    api(`v1/generations/${enc(generationId)}`).then((gen) => {
      seedSlot.replaceChildren("seed ", h("span", { class: "mono" }, String(gen.seed)),
        h("button", { type: "button", class: "btn btn-ghost btn-sm", title: "Use this seed",
          onclick: () => setSeed("text", gen.seed) }, "reuse"));
    }).catch(() => {});
  }

  function fillTextForm(gen) {
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
    state.stops = req.stop == null ? [] : Array.isArray(req.stop) ? [...req.stop] : [req.stop];
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

  function wireTextPage() {
    $$("input[name=text-mode]").forEach((r) => r.addEventListener("change", () => setTextMode(textMode())));
    $("#chat-add").addEventListener("click", () => $(".chat-content", addChatMessage("user", "")).focus());
    $("#text-generate").addEventListener("click", generateText);
    $("#text-stop").addEventListener("click", () => state.textAbort && state.textAbort.abort());
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
        if (!state.stops.includes(stop) && state.stops.length < 4) state.stops.push(stop);
        stopInput.value = "";
        renderStops();
      } else if (e.key === "Backspace" && stopInput.value === "" && state.stops.length) {
        state.stops.pop();
        renderStops();
      }
    });
    wireSeed("text");
    syncTemperature("number");
  }

  // ------------------------------------------------------------------ Images page

  function fillClasses(keep) {
    const model = modelById($("#image-model").value);
    const select = $("#image-class");
    const previous = keep ?? select.value;
    const classes = (model && model.classes) || [];
    select.replaceChildren(h("option", { value: "" }, "any (classes in turn)"),
      ...classes.map((c) => h("option", { value: c }, c)));
    select.value = classes.includes(previous) ? previous : "";
  }

  async function generateImages() {
    const model = $("#image-model").value;
    if (!model) return notify("Pick an image model first (none is registered yet: `genloop train ...`).");
    let body;
    try {
      body = {
        model,
        n: readNumber("image-n", "Images (n)", { integer: true, fallback: 1 }),
        response_format: "b64_json",
        seed: readSeed("image"),
        guidance: readNumber("image-guidance", "Guidance"),
        steps: readNumber("image-steps", "Steps", { integer: true }),
        sampler: $("#image-sampler").value,
        class: $("#image-class").value || null,
      };
    } catch (err) {
      return notify(err.message);
    }
    for (const key of ["seed", "guidance", "steps", "class"]) if (body[key] == null) delete body[key];

    const button = $("#image-generate");
    const status = $("#image-status");
    button.disabled = true;
    status.textContent = `Drawing ${body.n} image${body.n > 1 ? "s" : ""}…`;
    status.classList.add("busy");
    const t0 = performance.now();
    try {
      const result = await api("v1/images/generations", { method: "POST", body });
      renderImageGrid(model, result.data || [], performance.now() - t0);
      status.textContent = "";
    } catch (err) {
      status.textContent = "Failed.";
      reportError(err);
    } finally {
      button.disabled = false;
      status.classList.remove("busy");
    }
  }

  function renderImageGrid(model, items, elapsed) {
    const grid = $("#image-grid");
    const seedSlot = h("span", { class: "seed-slot" });
    grid.replaceChildren(h("div", { class: "grid-head" },
      h("span", null, `${items.length} image${items.length === 1 ? "" : "s"} from `,
        h("span", { class: "mono" }, model), ` in ${(elapsed / 1000).toFixed(2)} s`),
      seedSlot));
    items.forEach((item, i) => {
      const id = item.generation_id;
      const cls = item.class == null ? null : String(item.class);
      const img = h("img", { alt: `Generated image ${i + 1}${cls ? `, class ${cls}` : ""}`, loading: "lazy" });
      if (item.b64_json) img.src = `data:image/png;base64,${item.b64_json}`;
      const download = h("a", {
        class: "btn btn-sm btn-icon", href: `v1/generations/${enc(id)}/content`, download: `${id}.png`,
        title: "Download the PNG (with provenance)", "aria-label": "Download PNG",
        onclick: (e) => { e.preventDefault(); downloadContent(id, `${id}.png`).catch(reportError); },
      }, icon("download"));
      grid.append(h("div", { class: "tile", dataset: { generationId: id } }, img,
        h("div", { class: "tile-body" },
          h("div", { class: "tile-top" },
            cls != null ? h("span", { class: "pill pill-accent" }, `class ${cls}`) : h("span", { class: "pill" }, `#${i + 1}`),
            download),
          feedbackWidget(id, { compact: true }))));
    });
    if (items.length) {
      api(`v1/generations/${enc(items[0].generation_id)}`).then((gen) => {
        seedSlot.replaceChildren("seed ", h("span", { class: "mono" }, String(gen.seed)));
      }).catch(() => {});
    }
  }

  function fillImageForm(gen) {
    const req = gen.request || {};
    selectModel($("#image-model"), gen.model);
    const model = modelById(gen.model);
    // the request's class (null = classes in turn); `class` alone may be this image's own class
    let cls = "class_label" in req ? req.class_label : req.class;
    if (typeof cls === "number" && model && model.classes) cls = model.classes[cls];
    fillClasses(cls == null ? "" : String(cls));
    const set = (id, v) => { $(`#${id}`).value = v == null ? "" : String(v); };
    set("image-n", req.n ?? req.num_samples ?? 1);
    set("image-guidance", req.guidance ?? req.guidance_scale);
    set("image-steps", req.steps);
    $("#image-sampler").value = req.sampler || "ddim";
    setSeed("image", gen.seed ?? req.seed ?? null);
  }

  function wireImagesPage() {
    $("#image-model").addEventListener("change", () => fillClasses());
    $("#image-generate").addEventListener("click", generateImages);
    wireSeed("image");
  }

  // ------------------------------------------------------------------ History page

  function historyPreview(gen) {
    const req = gen.request || {};
    if (gen.kind === "image") {
      const img = h("img", { class: "thumb-img", alt: `Image ${gen.id}` });
      request(`v1/generations/${enc(gen.id)}/content`)
        .then((res) => res.blob())
        .then((blob) => {
          const url = URL.createObjectURL(blob);
          state.history.blobUrls.push(url);
          img.src = url;
        })
        .catch(() => img.classList.add("missing"));
      return h("div", { class: "preview-image" }, img,
        gen.output != null ? h("span", { class: "pill pill-accent" }, `class ${gen.output}`) : null);
    }
    let prompt;
    if (Array.isArray(req.messages) && req.messages.length) {
      const last = req.messages[req.messages.length - 1];
      prompt = `${last.role}: ${truncate(String(last.content ?? ""), 80)}\n`; // the reply on its own line
    } else {
      prompt = truncate(String(Array.isArray(req.prompt) ? req.prompt[0] ?? "" : req.prompt ?? ""), 80);
    }
    return h("div", { class: "preview-text" },
      h("span", { class: "prompt-echo" }, prompt), truncate(String(gen.output ?? ""), 200));
  }

  function feedbackChips(list) {
    return h("div", { class: "fb-list" }, ...(list || []).map((f) => {
      if (f.kind === "rating") return h("span", { class: "pill", title: f.comment || "rating" }, `${f.value}★`);
      if (f.kind === "thumbs") return h("span", { class: "pill", title: "thumbs" }, f.value > 0 ? "👍 up" : "👎 down");
      if (f.kind === "preference") {
        return h("span", { class: "pill pill-ok", title: `preference vs ${f.other_generation_id}` },
          f.other_generation_id ? "preferred" : "preference");
      }
      return h("span", { class: "pill" }, String(f.kind));
    }));
  }

  function historyRow(gen) {
    const pick = h("input", { type: "checkbox", "aria-label": `Pick ${gen.id} for A/B` });
    pick.addEventListener("change", () => togglePick(gen.id, pick.checked));
    const row = h("tr", { dataset: { id: gen.id, kind: gen.kind } },
      h("td", { class: "c-pick" }, h("label", { class: "pick" }, pick, h("span", { class: "ab-tag" }))),
      h("td", { class: "c-time", title: toDate(gen.created).toString() }, fmtTime(gen.created)),
      h("td", { class: "c-model" }, gen.model),
      h("td", null, h("span", { class: "pill" }, gen.kind)),
      h("td", { class: "c-preview" }, historyPreview(gen)),
      h("td", { class: "c-seed", title: String(gen.seed) }, String(gen.seed)),
      h("td", { class: "c-feedback" }, feedbackChips(gen.feedback)),
      h("td", { class: "c-act" }, h("button", {
        type: "button", class: "btn btn-sm restore", title: "Fill the form with every setting of this generation",
        onclick: () => restore(gen).catch(reportError),
      }, icon("restore"), "Restore")));
    return row;
  }

  async function loadHistory(reset) {
    const hist = state.history;
    if (reset) {
      hist.before = null;
      hist.picked = [];
      hist.rows.clear();
      hist.blobUrls.forEach((u) => URL.revokeObjectURL(u));
      hist.blobUrls = [];
      $("#history-rows").replaceChildren();
      renderPicks();
    }
    const params = new URLSearchParams({ limit: "25" });
    if (hist.before) params.set("before", hist.before);
    if ($("#history-kind").value) params.set("kind", $("#history-kind").value);
    if ($("#history-model").value) params.set("model", $("#history-model").value);
    const more = $("#history-more");
    more.disabled = true;
    try {
      const page = await api(`v1/generations?${params}`);
      const items = page.data || [];
      for (const gen of items) {
        hist.rows.set(gen.id, gen);
        $("#history-rows").append(historyRow(gen));
      }
      if (items.length) hist.before = items[items.length - 1].id;
      more.hidden = !page.has_more;
      $("#history-empty").hidden = hist.rows.size > 0;
    } finally {
      more.disabled = false;
    }
  }

  function togglePick(id, on) {
    const picked = state.history.picked.filter((p) => p !== id);
    if (on) picked.push(id);
    while (picked.length > 2) picked.shift(); // a third tick replaces the oldest
    state.history.picked = picked;
    renderPicks();
  }

  function renderPicks() {
    const [a, b] = state.history.picked;
    $$("#history-rows tr").forEach((tr) => {
      const role = tr.dataset.id === a ? "A" : tr.dataset.id === b ? "B" : "";
      $(".ab-tag", tr).textContent = role;
      $("input[type=checkbox]", tr).checked = role !== "";
      tr.classList.toggle("picked", role !== "");
    });
    const label = $("#ab-label");
    if (a && b) {
      label.replaceChildren("Compare ", h("strong", null, "A "), h("span", { class: "mono" }, a),
        " with ", h("strong", null, "B "), h("span", { class: "mono" }, b));
    } else if (a) {
      label.replaceChildren("A is ", h("span", { class: "mono" }, a), " — tick one more.");
    } else {
      label.textContent = "Tick two generations to compare them.";
    }
    $("#prefer-a").disabled = !(a && b);
    $("#prefer-b").disabled = !(a && b);
  }

  async function prefer(which) {
    const [a, b] = state.history.picked;
    if (!(a && b)) return;
    const [chosen, rejected] = which === "A" ? [a, b] : [b, a];
    await api("v1/preferences", { method: "POST", body: { chosen, rejected } });
    state.history.picked = [];
    for (const id of [chosen, rejected]) {
      const gen = await api(`v1/generations/${enc(id)}`);
      const tr = $$("#history-rows tr").find((r) => r.dataset.id === id);
      if (tr) $(".c-feedback", tr).replaceChildren(feedbackChips(gen.feedback));
    }
    renderPicks();
    $("#ab-label").replaceChildren(h("span", { class: "confirm" }, "✓ Preference recorded: "),
      h("span", { class: "mono" }, chosen), " preferred over ", h("span", { class: "mono" }, rejected));
  }

  /** Fill the Text or Images form with every setting the generation was made with. */
  async function restore(gen) {
    await state.modelsReady;
    if (gen.kind === "image") {
      fillImageForm(gen);
      location.hash = "#/images";
    } else {
      fillTextForm(gen);
      location.hash = "#/text";
    }
  }

  function wireHistoryPage() {
    $("#history-more").addEventListener("click", () => loadHistory(false).catch(reportError));
    $("#history-refresh").addEventListener("click", () => loadHistory(true).catch(reportError));
    $("#history-kind").addEventListener("change", () => loadHistory(true).catch(reportError));
    $("#history-model").addEventListener("change", () => loadHistory(true).catch(reportError));
    $("#prefer-a").addEventListener("click", () => prefer("A").catch(reportError));
    $("#prefer-b").addEventListener("click", () => prefer("B").catch(reportError));
  }

  // ------------------------------------------------------------------ Models page

  function metricsTable(metrics) {
    const entries = Object.entries(metrics || {});
    if (!entries.length) return h("p", { class: "hint" }, "No metrics recorded yet (`genloop eval`).");
    const rows = [];
    for (let i = 0; i < entries.length; i += 2) rows.push(entries.slice(i, i + 2));
    return h("table", { class: "metrics" }, h("tbody", null, ...rows.map((pair) => h("tr", null,
      ...pair.flatMap(([k, v]) => [h("th", { scope: "row", title: k }, k), h("td", { title: String(v) }, fmtNum(v))])))));
  }

  /** "Use": open the model's page with it selected. */
  function useButton(m) {
    const image = m.modality === "image";
    return h("a", { class: "btn btn-sm", href: image ? "#/images" : "#/text", onclick: () => {
      selectModel(image ? $("#image-model") : $("#text-model"), m.id);
      if (image) fillClasses();
    } }, "Use");
  }

  function modelCard(m) {
    const cardText = h("pre", { class: "model-card-text" }, "loading…");
    const facts = [["id", m.id], ["created", m.created != null ? toDate(m.created).toLocaleString() : null]];
    if (m.classes && m.classes.length) facts.push(["classes", m.classes.join(", ")]);
    const card = h("article", { class: "card model", dataset: { model: m.id } },
      h("div", { class: "model-head" },
        h("div", null,
          h("div", { class: "model-name" }, m.name ?? m.id),
          h("div", { class: "model-tags" },
            h("span", { class: "pill pill-accent" }, `v${m.version ?? "?"}`),
            h("span", { class: "pill" }, m.family ?? "?"),
            h("span", { class: "pill" }, m.modality ?? "?"),
            m.latest ? h("span", { class: "pill pill-ok" }, "latest") : null)),
        m.generative === false ? null : useButton(m)),
      h("dl", { class: "kv" }, ...facts.filter(([, v]) => v != null).flatMap(([k, v]) =>
        [h("dt", null, k), h("dd", null, String(v))])),
      metricsTable(m.metrics),
      h("details", { open: true }, h("summary", null, "Model card"), cardText));
    api(`v1/models/${enc(m.id)}`)
      .then((full) => { cardText.textContent = full.card || "(this version has no card)"; })
      .catch((err) => { cardText.textContent = `could not load the card: ${err.message}`; });
    return card;
  }

  async function renderModels(reload) {
    if (reload) await (state.modelsReady = loadModels());
    else await state.modelsReady;
    const box = $("#model-cards");
    box.replaceChildren(...state.models.map(modelCard));
    if (!state.models.length) {
      box.append(h("div", { class: "card empty" }, "No models yet. Train one: genloop train <recipe>"));
    }
  }

  // ------------------------------------------------------------------ routing & start

  const PAGES = {
    text: () => {},
    images: () => {},
    history: () => loadHistory(true),
    models: () => renderModels(false),
  };

  function route() {
    const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
    const page = name in PAGES ? name : "text";
    $$(".page").forEach((p) => { p.hidden = p.dataset.page !== page; });
    $$(".nav a").forEach((a) => a.classList.toggle("active", a.dataset.route === page));
    document.title = `${page[0].toUpperCase()}${page.slice(1)} · genloop studio`;
    Promise.resolve(PAGES[page]()).catch(reportError);
  }

  async function checkHealth() {
    const status = $("#server-status");
    try {
      const res = await fetch("health", { credentials: "same-origin" });
      const body = await res.json();
      status.dataset.state = res.ok && body.status === "ok" ? "ok" : "down";
      $(".label", status).textContent = res.ok ? `server ${body.status}` : `server ${res.status}`;
      $("#auth-banner").hidden = body.auth !== false;
    } catch (_) {
      status.dataset.state = "down";
      $(".label", status).textContent = "server unreachable";
    }
  }

  function start() {
    wireTextPage();
    wireImagesPage();
    wireHistoryPage();
    $("#models-refresh").addEventListener("click", () => renderModels(true).catch(reportError));
    state.modelsReady = loadModels().catch(reportError);
    checkHealth();
    setInterval(checkHealth, 15_000);
    window.addEventListener("hashchange", route);
    route();
  }

  start();
})();
