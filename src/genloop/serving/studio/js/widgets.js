/* Pieces several pages share: the feedback widget (stars and thumbs), downloading a stored
 * output, seed inputs and number fields. */

import { $, h, icon, enc, reportError } from "./dom.js";
import { api, request } from "./api.js";

// ------------------------------------------------------------------ feedback widget

/** Stars 1–5 and thumbs up/down for one generation; each click is one POST, confirmed inline. */
export function feedbackWidget(generationId, { compact = false } = {}) {
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
export async function downloadContent(generationId, filename) {
  const res = await request(`v1/generations/${enc(generationId)}/content`);
  const url = URL.createObjectURL(await res.blob());
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

// ------------------------------------------------------------------ seed inputs and numbers

export function wireSeed(prefix) {
  const input = $(`#${prefix}-seed`);
  const random = $(`#${prefix}-seed-random`);
  random.addEventListener("change", () => {
    input.disabled = random.checked;
    if (!random.checked) input.focus();
  });
}

export function setSeed(prefix, seed) {
  const random = $(`#${prefix}-seed-random`);
  const input = $(`#${prefix}-seed`);
  random.checked = seed == null;
  input.disabled = random.checked;
  input.value = seed == null ? "" : String(seed);
}

/** The seed to send: null when "random" is ticked (the server picks one and records it). */
export function readSeed(prefix) {
  if ($(`#${prefix}-seed-random`).checked) return null;
  const raw = $(`#${prefix}-seed`).value.trim();
  if (raw === "") throw new Error("Seed: enter a whole number, or tick \"Random\".");
  if (!/^\d+$/.test(raw)) throw new Error("Seed: must be a whole number ≥ 0.");
  return Number.isSafeInteger(Number(raw)) ? Number(raw) : raw; // big ones stay exact digits
}

/** A number field; blank gives `fallback` (null = leave the setting to the server). */
export function readNumber(id, label, { integer = false, fallback = null } = {}) {
  const raw = $(`#${id}`).value.trim();
  if (raw === "") return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new Error(`${label}: "${raw}" is not a ${integer ? "whole number" : "number"}.`);
  }
  return v;
}
