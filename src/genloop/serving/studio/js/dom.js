/* DOM helpers and messages shared by every page of the studio.
 *
 * Server data (model output, prompts, cards, error messages) only ever reaches the page as text:
 * through h() below, which appends strings as text nodes, or textContent. No innerHTML anywhere
 * in the studio: generated text may well contain "<script>".
 */

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Create an element; string children become text nodes, never markup. */
export function h(tag, props, ...children) {
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
export function icon(name) {
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

/** A bar's filled part, `share` (0–1) of its width. Set through the CSSOM: the page's CSP
 * (style-src 'self') refuses style attributes. */
export function fill(cls, share) {
  const el = h("span", { class: cls });
  el.style.width = `${(Math.max(0, Math.min(1, share)) * 100).toFixed(1)}%`;
  return el;
}

export const enc = encodeURIComponent;
export const truncate = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

export function fmtNum(v) {
  if (typeof v !== "number") return typeof v === "object" ? JSON.stringify(v) : String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

/** `created` is unix seconds (OpenAI style) or an ISO string; either way a Date. */
export function toDate(created) {
  if (typeof created === "number") return new Date(created * 1000);
  return new Date(created);
}

export function fmtTime(created) {
  const d = toDate(created);
  if (Number.isNaN(d.getTime())) return String(created ?? "");
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return today ? time : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

// ------------------------------------------------------------------ messages

/** Show a dismissable message; errors stay until dismissed, info fades after a few seconds. */
export function notify(text, kind = "error") {
  const box = h("div", { class: `msg msg-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", { class: "msg-text", text }),
    h("button", { type: "button", class: "msg-close", "aria-label": "Dismiss", onclick: () => box.remove() }, "×"));
  $("#messages").append(box);
  if (kind !== "error") setTimeout(() => box.remove(), 5000);
  return box;
}

export function reportError(err) {
  if (err && err.name === "AbortError") return;
  console.error(err);
  notify(err && err.message ? err.message : String(err));
}
