/* The Caption page: upload an image, a captioner describes it (POST v1/chat/completions with an
 * OpenAI image content part: the image as a data: URL, never a URL the server would fetch); rate
 * each caption, and fill the form (the image too) from a recorded caption (History's Restore). */

import { $, h, enc, notify, reportError } from "./dom.js";
import { api, request } from "./api.js";
import { selectModel } from "./catalog.js";
import { feedbackWidget, readNumber, readSeed, setSeed, wireSeed } from "./widgets.js";

/** The image the next caption reads: a data: URL, and where it came from (a file's name). */
const current = { dataUrl: null, name: null };

function showImage(dataUrl, name) {
  current.dataUrl = dataUrl;
  current.name = name;
  const img = $("#caption-preview");
  img.hidden = !dataUrl;
  if (dataUrl) img.src = dataUrl;
  else img.removeAttribute("src");
  $("#caption-placeholder").hidden = !!dataUrl;
  $("#caption-input").dataset.state = dataUrl ? "ready" : "empty";
}

const asDataUrl = (blob) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(String(reader.result));
  reader.onerror = () => reject(reader.error || new Error("the file could not be read"));
  reader.readAsDataURL(blob);
});

async function chooseFile() {
  const file = $("#caption-file").files[0];
  if (!file) return showImage(null, null);
  showImage(await asDataUrl(file), file.name);
}

async function caption() {
  const model = $("#caption-model").value;
  if (!model) return notify("Pick a captioner first (none is registered yet: `genloop train ...`).");
  if (!current.dataUrl) return notify("Image: choose a file to caption first.");
  let body;
  try {
    body = {
      model,
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: current.dataUrl } }] }],
      n: readNumber("caption-n", "Captions (n)", { integer: true, fallback: 1 }),
      temperature: readNumber("caption-temperature", "Temperature", { fallback: 0 }),
      num_beams: readNumber("caption-beams", "Beams", { integer: true, fallback: 1 }),
      max_tokens: readNumber("caption-max-tokens", "Max tokens", { integer: true }),
      seed: readSeed("caption"),
    };
  } catch (err) {
    return notify(err.message);
  }
  for (const key of ["max_tokens", "seed"]) if (body[key] == null) delete body[key];
  const button = $("#caption-generate");
  const status = $("#caption-status");
  button.disabled = true;
  status.textContent = "Captioning…";
  status.classList.add("busy");
  try {
    const result = await api("v1/chat/completions", { method: "POST", body });
    renderCaptions(result);
    status.textContent = "";
  } catch (err) {
    status.textContent = "Failed.";
    reportError(err);
  } finally {
    button.disabled = false;
    status.classList.remove("busy");
  }
}

function renderCaptions(result) {
  const list = $("#caption-output");
  list.replaceChildren(...(result.choices || []).map((c) => h("li", {
    dataset: { generationId: c.generation_id },
  },
  h("div", { class: "caption-text" }, c.message.content),
  h("div", { class: "caption-meta" },
    h("span", { class: "mono generation-id", dataset: { generationId: c.generation_id } }, c.generation_id),
    c.finish_reason === "content_filter" ? h("span", { class: "pill" }, "withheld") : null,
    feedbackWidget(c.generation_id, { compact: true })))));
  const first = (result.choices || [])[0];
  if (first) {
    api(`v1/generations/${enc(first.generation_id)}`).then((gen) => {
      list.dataset.seed = String(gen.seed);
    }).catch(() => {});
  }
}

/** A caption record (kind text, its request naming the image it read): is this one? */
export const isCaption = (gen) => !!(gen && gen.request && gen.request.image);

/** The image a caption generation read, as a blob (GET v1/generations/{id}/input). */
export async function captionInput(id) {
  return (await request(`v1/generations/${enc(id)}/input`)).blob();
}

/** Fill the form with every setting of a recorded caption, and its image. */
export async function fillCaptionForm(gen) {
  const req = gen.request || {};
  selectModel($("#caption-model"), gen.model);
  const set = (id, v) => { $(`#${id}`).value = v == null ? "" : String(v); };
  set("caption-n", 1); // the record is one caption: restored as the request of one that drew it
  set("caption-temperature", req.temperature ?? 0);
  set("caption-beams", req.num_beams ?? 1);
  set("caption-max-tokens", req.max_new_tokens);
  setSeed("caption", gen.seed ?? req.seed ?? null);
  $("#caption-file").value = "";
  showImage(await asDataUrl(await captionInput(gen.id)), `generation ${gen.id}`);
}

export function wireCaptionPage() {
  $("#caption-file").addEventListener("change", () => chooseFile().catch(reportError));
  $("#caption-generate").addEventListener("click", caption);
  wireSeed("caption");
}
