/* The Images page: draw a grid of images (a class, or a sentence for a text-conditioned model;
 * guidance, steps, sampler, seed), download each PNG, rate it, and fill the form from a recorded
 * generation (History's Restore). */

import { $, h, icon, enc, notify, reportError } from "./dom.js";
import { api } from "./api.js";
import { modelById, onModelsLoaded, selectModel } from "./catalog.js";
import { downloadContent, feedbackWidget, readNumber, readSeed, setSeed, wireSeed } from "./widgets.js";

/** A text-conditioned model takes a sentence (the Prompt field); any other a class. */
function showConditioning(model) {
  const text = !!model && model.conditioning === "text";
  $("#image-prompt-field").hidden = !text;
  $("#image-class-field").hidden = text;
  return text;
}

export function fillClasses(keep) {
  const model = modelById($("#image-model").value);
  showConditioning(model);
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
  const text = showConditioning(modelById(model));
  const prompt = $("#image-prompt").value.trim();
  if (text && !prompt) return notify("Prompt: describe the image to draw, e.g. \"a small red circle at the top left\".");
  let body;
  try {
    body = {
      model,
      n: readNumber("image-n", "Images (n)", { integer: true, fallback: 1 }),
      response_format: "b64_json",
      seed: readSeed("image"),
      guidance_scale: readNumber("image-guidance", "Guidance"),
      steps: readNumber("image-steps", "Steps", { integer: true }),
      sampler: $("#image-sampler").value,
      class: text ? null : $("#image-class").value || null,
      prompt: text ? prompt : null,
    };
  } catch (err) {
    return notify(err.message);
  }
  for (const key of ["seed", "guidance_scale", "steps", "class", "prompt"]) if (body[key] == null) delete body[key];

  const button = $("#image-generate");
  const status = $("#image-status");
  button.disabled = true;
  status.textContent = `Drawing ${body.n} image${body.n > 1 ? "s" : ""}…`;
  status.classList.add("busy");
  const t0 = performance.now();
  try {
    const result = await api("v1/images/generations", { method: "POST", body });
    renderImageGrid(model, result.data || [], performance.now() - t0, result.unknown_words);
    status.textContent = "";
  } catch (err) {
    status.textContent = "Failed.";
    reportError(err);
  } finally {
    button.disabled = false;
    status.classList.remove("busy");
  }
}

function renderImageGrid(model, items, elapsed, unknownWords) {
  const grid = $("#image-grid");
  const seedSlot = h("span", { class: "seed-slot" });
  const prompt = items.length && items[0].class == null ? items[0].revised_prompt : "";
  grid.replaceChildren(h("div", { class: "grid-head" },
    h("span", null, `${items.length} image${items.length === 1 ? "" : "s"} from `,
      h("span", { class: "mono" }, model), ` in ${(elapsed / 1000).toFixed(2)} s`,
      prompt ? h("span", { class: "grid-prompt" }, ` · “${prompt}”`) : null,
      unknownWords && unknownWords.length
        ? h("span", { class: "unknown-words" }, ` · unknown words: ${unknownWords.join(", ")}`) : null),
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

export function fillImageForm(gen) {
  const req = gen.request || {};
  selectModel($("#image-model"), gen.model);
  const model = modelById(gen.model);
  // the request's class (null = classes in turn); `class` alone may be this image's own class
  let cls = "class_label" in req ? req.class_label : req.class;
  if (typeof cls === "number" && model && model.classes) cls = model.classes[cls];
  fillClasses(cls == null ? "" : String(cls));
  const set = (id, v) => { $(`#${id}`).value = v == null ? "" : String(v); };
  $("#image-prompt").value = typeof req.prompt === "string" ? req.prompt : "";
  set("image-n", req.n ?? req.num_samples ?? 1);
  set("image-guidance", req.guidance_scale ?? req.guidance);
  set("image-steps", req.steps);
  $("#image-sampler").value = req.sampler || "ddim";
  setSeed("image", gen.seed ?? req.seed ?? null);
}

export function wireImagesPage() {
  $("#image-model").addEventListener("change", () => fillClasses());
  $("#image-generate").addEventListener("click", generateImages);
  wireSeed("image");
}

onModelsLoaded(() => fillClasses()); // the classes follow the selected image model
