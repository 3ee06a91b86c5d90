/* Lineage on the Models page: every tuned version under the version it was tuned from (the
 * models route's `parent`), each with its headline metrics and their change from its parent. */

import { $, h, fmtNum } from "./dom.js";

// the metrics a node shows, in this order of preference (at most three, those it has)
const HEADLINE = ["val_loss", "bits_per_char", "bits_per_token", "perplexity", "fid", "kid",
  "preference_accuracy", "preference_margin_nats", "reward_margin", "pair_accuracy", "reward_accuracy", "sample_accuracy",
  "test_accuracy", "inception_score"];
const LOWER_IS_BETTER = /loss|bits|perplexity|fid|kid|nll|nelbo|repetition/;
const HIGHER_IS_BETTER = /accuracy|margin|precision|recall|inception|distinct|win/;

function headline(metrics) {
  const keys = HEADLINE.filter((k) => typeof metrics[k] === "number");
  return keys.length ? keys.slice(0, 3)
    : Object.keys(metrics).filter((k) => typeof metrics[k] === "number").slice(0, 2);
}

/** The change of `key` from the parent, coloured when the metric's better direction is known. */
function delta(key, value, before) {
  if (typeof before !== "number") return null;
  const d = value - before;
  if (d === 0) return h("span", { class: "delta" }, "±0");
  const better = LOWER_IS_BETTER.test(key) ? d < 0 : HIGHER_IS_BETTER.test(key) ? d > 0 : null;
  const cls = better == null ? "delta" : better ? "delta better" : "delta worse";
  return h("span", { class: cls, title: `${fmtNum(before)} in the parent` }, `${d > 0 ? "+" : "−"}${fmtNum(Math.abs(d))}`);
}

function showCard(id) {
  const card = $(`#model-cards article[data-model="${CSS.escape(id)}"]`);
  if (!card) return;
  card.scrollIntoView({ behavior: "smooth", block: "center" });
  card.classList.remove("flash");
  void card.offsetWidth; // restart the animation
  card.classList.add("flash");
}

function node(m, byId, children) {
  const parent = m.parent ? byId.get(m.parent) : null;
  const metrics = m.metrics || {};
  const kids = children.get(m.id) || [];
  return h("li", { class: "lineage-node", dataset: { model: m.id } },
    h("div", { class: "node" },
      parent ? h("span", { class: "node-arrow", "aria-hidden": "true" }, "→") : null,
      h("button", { type: "button", class: "node-name", title: "Show its card", onclick: () => showCard(m.id) }, m.id),
      m.latest ? h("span", { class: "pill pill-ok" }, "latest") : null,
      h("span", { class: "node-metrics" }, ...headline(metrics).map((k) => h("span", { class: "node-metric" },
        h("span", { class: "node-key" }, k), " ", h("span", { class: "mono" }, fmtNum(metrics[k])),
        parent ? delta(k, metrics[k], (parent.metrics || {})[k]) : null)))),
    kids.length ? h("ul", null, ...kids.map((c) => node(c, byId, children))) : null);
}

/** The lineage trees of `models` (oldest first down each tree); null when nothing was tuned. */
export function lineageTree(models) {
  const byId = new Map(models.map((m) => [m.id, m]));
  const children = new Map();
  for (const m of models) {
    if (!m.parent || !byId.has(m.parent)) continue;
    if (!children.has(m.parent)) children.set(m.parent, []);
    children.get(m.parent).push(m);
  }
  if (!children.size) return null;
  for (const list of children.values()) list.sort((a, b) => (a.created ?? 0) - (b.created ?? 0));
  const roots = models.filter((m) => children.has(m.id) && !(m.parent && byId.has(m.parent)))
    .sort((a, b) => (a.created ?? 0) - (b.created ?? 0));
  return h("ul", { class: "lineage-tree" }, ...roots.map((r) => node(r, byId, children)));
}
