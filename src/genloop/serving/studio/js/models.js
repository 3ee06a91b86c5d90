/* The Models page: the lineage of tuned versions (lineage.js), and a card per served model
 * version (family, modality, classes, parent and children, metrics, model card) with "Use",
 * which opens the Text or Images page with it selected, and "Improve" for text models. */

import { $, h, enc, fmtNum, toDate } from "./dom.js";
import { api } from "./api.js";
import { catalog, loadModels, selectModel } from "./catalog.js";
import { fillClasses } from "./images.js";
import { improveModel } from "./improve.js";
import { lineageTree } from "./lineage.js";

function metricsTable(metrics) {
  const entries = Object.entries(metrics || {});
  if (!entries.length) return h("p", { class: "hint" }, "No metrics recorded yet (`genloop eval`).");
  const rows = [];
  for (let i = 0; i < entries.length; i += 2) rows.push(entries.slice(i, i + 2));
  return h("table", { class: "metrics" }, h("tbody", null, ...rows.map((pair) => h("tr", null,
    ...pair.flatMap(([k, v]) => [h("th", { scope: "row", title: k }, k), h("td", { title: String(v) }, fmtNum(v))])))));
}

/** "Use": open the model's page with it selected (a captioner's is the Caption page). */
function useButton(m) {
  const image = m.modality === "image";
  const captioner = m.conditioning === "image";
  const [page, select] = image ? ["#/images", "#image-model"]
    : captioner ? ["#/caption", "#caption-model"] : ["#/text", "#text-model"];
  return h("a", { class: "btn btn-sm", href: page, onclick: () => {
    selectModel($(select), m.id);
    if (image) fillClasses();
  } }, "Use");
}

function modelCard(m) {
  const cardText = h("pre", { class: "model-card-text" }, "loading…");
  const facts = [["id", m.id], ["created", m.created != null ? toDate(m.created).toLocaleString() : null]];
  if (m.classes && m.classes.length) facts.push(["classes", m.classes.join(", ")]);
  if (m.parent) facts.push(["parent", m.parent]);
  const children = catalog.models.filter((c) => c.parent === m.id).map((c) => c.id);
  if (children.length) facts.push(["children", children.join(", ")]);
  const card = h("article", { class: "card model", dataset: { model: m.id } },
    h("div", { class: "model-head" },
      h("div", null,
        h("div", { class: "model-name" }, m.name ?? m.id),
        h("div", { class: "model-tags" },
          h("span", { class: "pill pill-accent" }, `v${m.version ?? "?"}`),
          h("span", { class: "pill" }, m.family ?? "?"),
          h("span", { class: "pill" }, m.modality ?? "?"),
          m.latest ? h("span", { class: "pill pill-ok" }, "latest") : null)),
      h("div", { class: "model-actions" },
        m.modality === "text" && m.generative !== false && m.conditioning !== "image"
          ? h("button", { type: "button", class: "btn btn-sm improve", onclick: () => improveModel(m.id) }, "Improve") : null,
        m.generative === false ? null : useButton(m))),
    h("dl", { class: "kv" }, ...facts.filter(([, v]) => v != null).flatMap(([k, v]) =>
      [h("dt", null, k), h("dd", { dataset: { fact: k } }, String(v))])),
    metricsTable(m.metrics),
    h("details", { open: true }, h("summary", null, "Model card"), cardText));
  api(`v1/models/${enc(m.id)}`)
    .then((full) => { cardText.textContent = full.card || "(this version has no card)"; })
    .catch((err) => { cardText.textContent = `could not load the card: ${err.message}`; });
  return card;
}

export async function renderModels(reload) {
  if (reload) await (catalog.ready = loadModels());
  else await catalog.ready;
  const tree = lineageTree(catalog.models);
  $("#lineage").replaceChildren(...(tree ? [tree] : []));
  $("#lineage-card").hidden = !tree;
  const box = $("#model-cards");
  box.replaceChildren(...catalog.models.map(modelCard));
  if (!catalog.models.length) {
    box.append(h("div", { class: "card empty" }, "No models yet. Train one: genloop train <recipe>"));
  }
}
