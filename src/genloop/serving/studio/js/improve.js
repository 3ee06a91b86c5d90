/* The Improve page, per text model: the feedback it has (GET v1/models/{model}/feedback), tuning
 * from it with a chosen objective (POST v1/fine_tuning/jobs with the genloop extra
 * `from_feedback`), the job's live progress (the job and its events, polled: a progress bar from
 * the step events, the loss and its curve), and the model's earlier jobs. A finished job opens
 * the blind comparison of parent and child (compare.js). */

import { $, $$, h, enc, fill, fmtNum, fmtTime, toDate, reportError } from "./dom.js";
import { api } from "./api.js";
import { catalog, fillModelSelect, loadModels, modelById, onModelsLoaded, selectModel } from "./catalog.js";
import { openCompare } from "./compare.js";
import { readNumber } from "./widgets.js";

const OBJECTIVES = {
  sft: { label: "SFT", records: "liked outputs",
    hint: "Supervised fine-tuning on the liked outputs: thumbs up, or stars at the threshold or above." },
  dpo: { label: "DPO", records: "preference pairs",
    hint: "DPO on pairs: your A/B preferences, and a liked and a disliked output of the same prompt." },
  kto: { label: "KTO", records: "rated outputs",
    hint: "KTO on single outputs marked liked or disliked; it needs no pairs." },
};
const ACTIVE = new Set(["validating_files", "queued", "running"]);
const POLL_MS = 1000;

/** The job being watched: its id, the poll timer, the loss of each step seen, its step count. */
const watch = { id: null, timer: null, losses: new Map(), total: null };
let summary = null; // the latest feedback summary, read by readSummary()

const objectiveChoice = () => $("input[name=tune-objective]:checked").value;

// ------------------------------------------------------------------ the feedback summary

/** The summary as this page uses it: `{generations, feedback: {ratings, thumbs_up, thumbs_down,
 * preferences}, usable: {sft, dpo, kto, ...}, min_records: {...}}`, per objective the usable
 * records and the least a tune takes (null when the server does not say). */
function readSummary(s) {
  const counts = s.feedback || {};
  const num = (v) => (typeof v === "number" ? v : 0);
  const per = {};
  for (const key of Object.keys(OBJECTIVES)) {
    const min = (s.min_records || {})[key];
    per[key] = { records: num((s.usable || {})[key]), min: typeof min === "number" ? min : null };
  }
  return {
    generations: num(s.generations), ratings: num(counts.ratings), up: num(counts.thumbs_up),
    down: num(counts.thumbs_down), preferences: num(counts.preferences), per,
  };
}

function stat(label, value, key) {
  return h("div", { class: "stat", dataset: { stat: key } },
    h("div", { class: "stat-value" }, fmtNum(value)), h("div", { class: "stat-label" }, label));
}

function renderSummary() {
  const s = summary;
  $("#feedback-stats").replaceChildren(
    stat("generations", s.generations, "generations"), stat("ratings", s.ratings, "ratings"),
    stat("thumbs up", s.up, "thumbs_up"), stat("thumbs down", s.down, "thumbs_down"),
    stat("preferences", s.preferences, "preferences"));
  $("#feedback-usable").replaceChildren(h("div", { class: "usable-title" }, "Usable for tuning"),
    ...Object.entries(OBJECTIVES).map(([key, o]) => {
      const { records, min } = s.per[key];
      const ready = min == null || records >= min;
      const share = min ? Math.min(1, records / min) : records > 0 ? 1 : 0;
      return h("div", { class: `usable-row${key === objectiveChoice() ? " current" : ""}`, dataset: { objective: key } },
        h("span", { class: "usable-name" }, o.label),
        h("span", { class: "usable-count" }, h("strong", null, fmtNum(records)), ` ${o.records}`),
        h("span", { class: "meter" }, fill(`meter-fill${ready ? " ready" : ""}`, share)),
        h("span", { class: `usable-state${ready ? " ready" : ""}` },
          min == null ? "" : ready ? "ready" : `${min - records} more needed`));
    }));
  renderReadiness();
}

function renderReadiness() {
  const key = objectiveChoice();
  $("#tune-objective-hint").textContent = OBJECTIVES[key].hint;
  $$("#feedback-usable .usable-row").forEach((r) => r.classList.toggle("current", r.dataset.objective === key));
  const note = $("#tune-readiness");
  const per = summary && summary.per[key];
  if (!per) { note.textContent = ""; return; }
  note.textContent = per.min == null
    ? `${per.records} ${OBJECTIVES[key].records} to tune on.`
    : per.records >= per.min
      ? `${per.records} ${OBJECTIVES[key].records} to tune on (at least ${per.min} needed).`
      : `${per.min - per.records} more ${OBJECTIVES[key].records} needed before tuning with ${OBJECTIVES[key].label} (at least ${per.min}).`;
  $("#tune-start").disabled = per.min != null && per.records < per.min;
}

async function loadSummary(model) {
  const threshold = readNumber("tune-threshold", "Liked from", { integer: true, fallback: 4 });
  summary = readSummary(await api(`v1/models/${enc(model)}/feedback?threshold=${threshold}`));
  if ($("#improve-model").value === model) renderSummary();
}

// ------------------------------------------------------------------ jobs

const METHOD_OBJECTIVE = { supervised: "sft", dpo: "dpo", kto: "kto" }; // OpenAI's method types

/** The objective a job tunes with: its feedback dataset's, else its method's. */
function objectiveOf(job) {
  const origin = (job.data && job.data.origin) || {};
  const key = origin.objective || METHOD_OBJECTIVE[(job.method || {}).type];
  return key ? (OBJECTIVES[key] ? OBJECTIVES[key].label : key.toUpperCase()) : "—";
}

/** Whether `job` tuned `model` (jobs name the base as given: "name" or "name@N"). */
function jobOf(job, model) {
  const m = modelById(model);
  return job.model === model || (m && m.latest && job.model === m.name);
}

async function loadJobs(model) {
  const list = await api("v1/fine_tuning/jobs?limit=50");
  const jobs = (list.data || []).filter((j) => jobOf(j, model));
  if ($("#improve-model").value !== model) return jobs;
  $("#jobs-rows").replaceChildren(...jobs.map((job) => h("tr", { dataset: { id: job.id } },
    h("td", { class: "c-time", title: toDate(job.created_at).toString() }, fmtTime(job.created_at)),
    h("td", { class: "c-model c-job", title: job.id }, job.id),
    h("td", null, h("span", { class: "pill" }, objectiveOf(job))),
    h("td", null, h("span", { class: `pill status-${job.status}` }, job.status)),
    h("td", { class: "c-model" }, job.fine_tuned_model || ""),
    h("td", { class: "c-act" }, h("button", { type: "button", class: "btn btn-sm",
      onclick: () => watchJob(job).catch(reportError) }, job.id === watch.id ? "Watching" : "Watch")))));
  $("#jobs-empty").hidden = jobs.length > 0;
  return jobs;
}

async function startTune() {
  const model = $("#improve-model").value;
  if (!model) return;
  const body = {
    model,
    from_feedback: { objective: objectiveChoice(),
      threshold: readNumber("tune-threshold", "Liked from", { integer: true, fallback: 4 }) },
  };
  const steps = readNumber("tune-steps", "Steps", { integer: true });
  if (steps != null) body.hyperparameters = { steps };
  const button = $("#tune-start");
  button.disabled = true;
  try {
    const job = await api("v1/fine_tuning/jobs", { method: "POST", body });
    await watchJob(job);
    loadJobs(model).catch(reportError);
  } finally {
    button.disabled = false;
    renderReadiness();
  }
}

/** Show `job` and poll it and its events until it ends. */
async function watchJob(job) {
  clearTimeout(watch.timer);
  if (watch.id !== job.id) Object.assign(watch, { id: job.id, losses: new Map(), total: null });
  const poll = async () => {
    const [now, events] = await Promise.all([
      api(`v1/fine_tuning/jobs/${enc(job.id)}`),
      api(`v1/fine_tuning/jobs/${enc(job.id)}/events?limit=100`)]);
    if (watch.id !== job.id) return;
    renderJob(now, events.data || []);
    if (ACTIVE.has(now.status)) watch.timer = setTimeout(() => poll().catch(reportError), POLL_MS);
    else await finished(now);
  };
  renderJob(job, []);
  await poll();
}

async function finished(job) {
  const model = $("#improve-model").value;
  if (job.status === "succeeded") await (catalog.ready = loadModels());
  await Promise.all([loadSummary(model), loadJobs(model)]);
}

function renderJob(job, events) {
  for (const e of events) { // newest first, as OpenAI lists them; step events carry data.step
    const d = e.data || {};
    if (typeof d.step !== "number") continue;
    const loss = d.train_loss ?? d.loss;
    if (typeof loss === "number") watch.losses.set(d.step, loss);
    else if (!watch.losses.has(d.step)) watch.losses.set(d.step, null);
    if (typeof d.total_steps === "number") watch.total = d.total_steps;
  }
  const hp = job.hyperparameters || {};
  const total = watch.total ?? (typeof hp.steps === "number" ? hp.steps : null);
  const steps = [...watch.losses.keys()];
  const step = steps.length ? Math.max(...steps) : 0;
  const done = job.status === "succeeded";
  const pct = done ? 100 : total ? Math.min(100, (100 * step) / total) : 0;

  $("#job-card").hidden = false;
  $("#job-card").dataset.status = job.status;
  $("#job-id").textContent = job.id;
  const status = $("#job-status");
  status.textContent = job.status;
  status.className = `pill status-${job.status}`;
  const bar = $("#job-progress");
  bar.style.width = `${pct.toFixed(1)}%`;
  bar.dataset.state = job.status;
  bar.parentElement.setAttribute("aria-valuenow", String(Math.round(pct)));
  $("#job-cancel").hidden = !ACTIVE.has(job.status);

  const losses = steps.sort((a, b) => a - b).map((s) => watch.losses.get(s)).filter((v) => v != null);
  const last = losses.length ? losses[losses.length - 1] : null;
  $("#job-meta").replaceChildren(...[
    h("span", { class: "pill" }, objectiveOf(job)),
    h("span", { class: "job-step" }, total ? `step ${step} of ${total}` : `step ${step}`),
    last != null ? h("span", null, "loss ", h("span", { class: "mono job-loss" }, fmtNum(last))) : null,
    h("span", null, `${Math.round(pct)}%`),
    job.created_at ? h("span", null, `started ${fmtTime(job.created_at)}`) : null].filter(Boolean));
  $("#job-chart").replaceChildren(...(losses.length > 1 ? [lossChart(losses)] : []));
  $("#job-events").replaceChildren(...events.slice(0, 5).map((e) => h("li", { class: `event level-${e.level || "info"}` },
    h("span", { class: "event-time" }, e.created_at ? fmtTime(e.created_at) : ""),
    h("span", { class: "event-text" }, e.message || ""))));

  const result = $("#job-result");
  result.hidden = ACTIVE.has(job.status);
  if (done && job.fine_tuned_model) {
    result.className = "job-result ok";
    result.replaceChildren(
      h("div", null, "New version ", h("span", { class: "mono new-version" }, job.fine_tuned_model),
        " is served, tuned from ", h("span", { class: "mono" }, job.model), "."),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "btn btn-sm btn-primary compare-child",
          onclick: () => openCompare(job.fine_tuned_model, parentOf(job)) }, "Compare blind with its parent"),
        h("a", { class: "btn btn-sm", href: "#/text", onclick: () => selectModel($("#text-model"), job.fine_tuned_model) },
          "Use")));
  } else if (!ACTIVE.has(job.status)) {
    result.className = "job-result err";
    const why = job.error && job.error.message;
    result.replaceChildren(h("div", null, job.status === "cancelled" ? "The job was cancelled." : `The job failed${why ? ": " : "."}`,
      why ? h("span", { class: "job-error" }, why) : null));
  }
}

/** The parent version of the job's new model (from the models list), else the job's base. */
function parentOf(job) {
  const child = modelById(job.fine_tuned_model);
  return (child && child.parent) || $("#improve-model").value || job.model;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** The loss of each step as a line (numbers only reach the SVG). */
function lossChart(values) {
  const w = 600, hgt = 80, pad = 4;
  const lo = Math.min(...values), hi = Math.max(...values);
  const span = hi - lo || 1;
  const pts = values.map((v, i) => `${(pad + ((w - 2 * pad) * i) / (values.length - 1)).toFixed(1)},`
    + `${(pad + ((hgt - 2 * pad) * (hi - v)) / span).toFixed(1)}`).join(" ");
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Training loss, from ${fmtNum(values[0])} to ${fmtNum(values[values.length - 1])}`);
  const line = document.createElementNS(SVG_NS, "polyline");
  line.setAttribute("points", pts);
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(line);
  return h("div", { class: "loss-wrap" }, svg, h("div", { class: "loss-axis" },
    h("span", null, `loss ${fmtNum(hi)}`), h("span", null, fmtNum(lo))));
}

// ------------------------------------------------------------------ the page

/** Open the Improve page on `model`. */
export function improveModel(model) {
  selectModel($("#improve-model"), model);
  location.hash = "#/improve";
}

export async function showImprove() {
  await catalog.ready;
  const model = $("#improve-model").value;
  if (!model) {
    $("#feedback-stats").replaceChildren(h("div", { class: "empty" }, "No text models yet. Train one: genloop train <recipe>"));
    return;
  }
  const [jobs] = await Promise.all([loadJobs(model), loadSummary(model)]);
  const running = jobs.find((j) => ACTIVE.has(j.status));
  if (running && watch.id !== running.id) await watchJob(running);
}

export function wireImprovePage() {
  $("#improve-model").addEventListener("change", () => {
    clearTimeout(watch.timer);
    watch.id = null;
    $("#job-card").hidden = true;
    showImprove().catch(reportError);
  });
  $("#improve-refresh").addEventListener("click", () => showImprove().catch(reportError));
  $$("input[name=tune-objective]").forEach((r) => r.addEventListener("change", renderReadiness));
  $("#tune-start").addEventListener("click", () => startTune().catch(reportError));
  $("#tune-threshold").addEventListener("change", () => {
    const model = $("#improve-model").value;
    if (model) loadSummary(model).catch(reportError);
  });
  $("#job-cancel").addEventListener("click", () => {
    if (watch.id) api(`v1/fine_tuning/jobs/${enc(watch.id)}/cancel`, { method: "POST" }).catch(reportError);
  });
  renderReadiness();
}

onModelsLoaded(() => fillModelSelect($("#improve-model"), "text"));
