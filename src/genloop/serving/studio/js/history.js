/* The History page: every recorded generation, newest first and paged, filtered by kind and model;
 * a preview, the seed and the feedback of each (with stars and thumbs to rate it); Restore (fill
 * the Text, Images or Caption form with every setting); and an A/B preference between two ticked
 * rows. */

import { $, $$, h, icon, enc, truncate, toDate, fmtTime, reportError } from "./dom.js";
import { api, request } from "./api.js";
import { catalog } from "./catalog.js";
import { fillTextForm, safetyNote } from "./text.js";
import { fillImageForm } from "./images.js";
import { captionInput, fillCaptionForm, isCaption } from "./caption.js";
import { feedbackWidget } from "./widgets.js";

/** The rows shown, the paging cursor, the A/B picks and the object URLs of image previews. */
const view = { before: null, picked: [], rows: new Map(), blobUrls: [] };

function historyPreview(gen) {
  const req = gen.request || {};
  if (gen.kind === "image") {
    const img = h("img", { class: "thumb-img", alt: `Image ${gen.id}` });
    request(`v1/generations/${enc(gen.id)}/content`)
      .then((res) => res.blob())
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        view.blobUrls.push(url);
        img.src = url;
      })
      .catch(() => img.classList.add("missing"));
    return h("div", { class: "preview-image" }, img,
      gen.output != null ? h("span", { class: "pill pill-accent" }, `class ${gen.output}`) : null);
  }
  if (isCaption(gen)) { // the image it read, then its caption
    const img = h("img", { class: "caption-thumb", alt: `The image captioned by ${gen.id}` });
    captionInput(gen.id).then((blob) => {
      const url = URL.createObjectURL(blob);
      view.blobUrls.push(url);
      img.src = url;
    }).catch(() => img.classList.add("missing"));
    return h("div", { class: "preview-caption" }, img, truncate(String(gen.output ?? ""), 200),
      safetyNote(gen.safety));
  }
  let prompt;
  if (Array.isArray(req.messages) && req.messages.length) {
    const last = req.messages[req.messages.length - 1];
    prompt = `${last.role}: ${truncate(String(last.content ?? ""), 80)}\n`; // the reply on its own line
  } else {
    prompt = truncate(String(Array.isArray(req.prompt) ? req.prompt[0] ?? "" : req.prompt ?? ""), 80);
  }
  return h("div", { class: "preview-text" },
    h("span", { class: "prompt-echo" }, prompt), truncate(String(gen.output ?? ""), 200),
    safetyNote(gen.safety));
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
    h("td", { class: "c-feedback" }, feedbackChips(gen.feedback), feedbackWidget(gen.id, { compact: true })),
    h("td", { class: "c-act" }, h("button", {
      type: "button", class: "btn btn-sm restore", title: "Fill the form with every setting of this generation",
      onclick: () => restore(gen).catch(reportError),
    }, icon("restore"), "Restore")));
  return row;
}

export async function loadHistory(reset) {
  const hist = view;
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
  const picked = view.picked.filter((p) => p !== id);
  if (on) picked.push(id);
  while (picked.length > 2) picked.shift(); // a third tick replaces the oldest
  view.picked = picked;
  renderPicks();
}

function renderPicks() {
  const [a, b] = view.picked;
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
  const [a, b] = view.picked;
  if (!(a && b)) return;
  const [chosen, rejected] = which === "A" ? [a, b] : [b, a];
  await api("v1/preferences", { method: "POST", body: { chosen, rejected } });
  view.picked = [];
  for (const id of [chosen, rejected]) {
    const gen = await api(`v1/generations/${enc(id)}`);
    const tr = $$("#history-rows tr").find((r) => r.dataset.id === id);
    if (tr) $(".c-feedback .fb-list", tr).replaceWith(feedbackChips(gen.feedback));
  }
  renderPicks();
  $("#ab-label").replaceChildren(h("span", { class: "confirm" }, "✓ Preference recorded: "),
    h("span", { class: "mono" }, chosen), " preferred over ", h("span", { class: "mono" }, rejected));
}

/** Fill the Text or Images form with every setting the generation was made with. */
async function restore(gen) {
  await catalog.ready;
  if (gen.kind === "image") {
    fillImageForm(gen);
    location.hash = "#/images";
  } else if (isCaption(gen)) {
    await fillCaptionForm(gen);
    location.hash = "#/caption";
  } else {
    fillTextForm(gen);
    location.hash = "#/text";
  }
}

export function wireHistoryPage() {
  $("#history-more").addEventListener("click", () => loadHistory(false).catch(reportError));
  $("#history-refresh").addEventListener("click", () => loadHistory(true).catch(reportError));
  $("#history-kind").addEventListener("change", () => loadHistory(true).catch(reportError));
  $("#history-model").addEventListener("change", () => loadHistory(true).catch(reportError));
  $("#prefer-a").addEventListener("click", () => prefer("A").catch(reportError));
  $("#prefer-b").addEventListener("click", () => prefer("B").catch(reportError));
}
