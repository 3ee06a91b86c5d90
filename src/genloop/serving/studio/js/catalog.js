/* The served models, fetched once at start (and again from the Models page), and the model
 * selects of the Text, Images and History pages that list them. */

import { $, $$, h } from "./dom.js";
import { api } from "./api.js";

/** `models`: the list of GET v1/models; `ready`: the promise of the latest load. */
export const catalog = { models: [], ready: null };
const listeners = [];

/** Call `fn` after every load of the list (a page whose fields depend on the model in use). */
export const onModelsLoaded = (fn) => listeners.push(fn);

export const modelById = (id) => catalog.models.find((m) => m.id === id);

export async function loadModels() {
  const list = await api("v1/models");
  catalog.models = list.data || [];
  fillModelSelect($("#text-model"), "text");
  fillModelSelect($("#image-model"), "image");
  fillModelSelect($("#caption-model"), "text", "image");
  const filter = $("#history-model");
  const keep = filter.value;
  filter.replaceChildren(h("option", { value: "" }, "All models"),
    ...catalog.models.map((m) => h("option", { value: m.id }, m.id)));
  filter.value = keep;
  listeners.forEach((fn) => fn());
}

/** Fill a model select with the generative models of `modality`, keeping its choice if listed;
 * `reads` "image": the captioners only (text models that read an image), else none of them. */
export function fillModelSelect(select, modality, reads = null) {
  const keep = select.value;
  const models = catalog.models.filter((m) => m.modality === modality && m.generative !== false
    && (reads === "image") === (m.conditioning === "image"));
  if (!models.length) {
    const what = reads === "image" ? "captioners" : `${modality} models`;
    select.replaceChildren(h("option", { value: "" }, `No ${what} — train one with \`genloop train\``));
    return;
  }
  select.replaceChildren(...models.map((m) =>
    h("option", { value: m.id }, `${m.id}${m.latest ? "  · latest" : ""}  — ${m.family}`)));
  if (keep && models.some((m) => m.id === keep)) select.value = keep;
}

/** Select `id` in a model select, adding it when the server no longer lists it. */
export function selectModel(select, id) {
  if (!$$("option", select).some((o) => o.value === id)) {
    select.append(h("option", { value: id }, `${id} (not served)`));
  }
  select.value = id;
}
