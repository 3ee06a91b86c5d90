/* The blind comparison: a child and its parent answer the same prompts with the same seed
 * (POST v1/completions), shown side by side in a random order without their names. The user
 * picks one (POST v1/preferences: a preference like any other, training data for the next
 * tune); then the names are revealed and a running tally counts the wins of each. */

import { $, h, enc, fill, notify, reportError } from "./dom.js";
import { api } from "./api.js";
import { catalog, fillModelSelect, modelById, onModelsLoaded, selectModel } from "./catalog.js";
import { readNumber } from "./widgets.js";

/** The prompts of this session and the round on show; the tally of each child-parent pair. */
const session = { child: null, parent: null, prompts: [], index: 0, round: null };
const tallies = new Map(); // "child|parent" -> { child, parent, skipped, rounds: [...] }

const tallyOf = () => {
  const key = `${session.child}|${session.parent}`;
  if (!tallies.has(key)) tallies.set(key, { child: 0, parent: 0, skipped: 0, rounds: [] });
  return tallies.get(key);
};

/** Open the comparison of `child` with `parent` (Improve's finished job). */
export function openCompare(child, parent) {
  selectModel($("#compare-child"), child);
  selectModel($("#compare-parent"), parent);
  location.hash = "#/compare";
}

async function complete(model, prompt, seed, settings) {
  const reply = await api("v1/completions", {
    method: "POST", body: { model, prompt, seed, n: 1, ...settings } });
  const choice = reply.choices[0];
  return { model, text: choice.text, id: choice.generation_id };
}

async function start() {
  const child = $("#compare-child").value;
  const parent = $("#compare-parent").value;
  if (!child || !parent) return notify("Pick a child and a parent model first.");
  if (child === parent) return notify("Pick two different models: the child and the version it was tuned from.");
  const prompts = $("#compare-prompts").value.split("\n").map((p) => p.trim()).filter(Boolean);
  if (!prompts.length) return notify("Prompts: enter at least one, one a line.");
  Object.assign(session, { child, parent, prompts, index: 0, round: null });
  renderTally();
  await nextRound();
}

async function nextRound() {
  const status = $("#compare-status");
  if (session.index >= session.prompts.length) {
    status.textContent = `All ${session.prompts.length} prompt${session.prompts.length === 1 ? "" : "s"} compared.`;
    $("#arena-next").hidden = true;
    return;
  }
  const prompt = session.prompts[session.index];
  let settings;
  try {
    settings = {
      max_tokens: readNumber("compare-max-tokens", "Max tokens", { integer: true, fallback: 48 }),
      temperature: readNumber("compare-temperature", "Temperature", { fallback: 0.8 }),
    };
    settings.seed = readNumber("compare-seed", "Seed", { integer: true, fallback: 1 }) + session.index;
  } catch (err) {
    return notify(err.message);
  }
  const { seed } = settings;
  delete settings.seed;
  $("#compare-start").disabled = true;
  $("#arena-next").hidden = true;
  status.textContent = `Generating with both models (seed ${seed})…`;
  status.classList.add("busy");
  try {
    const [child, parent] = await Promise.all([
      complete(session.child, prompt, seed, settings), complete(session.parent, prompt, seed, settings)]);
    const sides = [{ role: "child", ...child }, { role: "parent", ...parent }];
    if (Math.random() < 0.5) sides.reverse(); // which side is which is not for the user to know
    session.round = { prompt, seed, sides, decided: false };
    renderArena();
    status.textContent = "";
  } catch (err) {
    status.textContent = "Failed.";
    throw err;
  } finally {
    $("#compare-start").disabled = false;
    status.classList.remove("busy");
  }
}

function renderArena() {
  const { prompt, seed, sides } = session.round;
  $("#arena-card").hidden = false;
  $("#arena-round").textContent = `${session.index + 1} of ${session.prompts.length} · seed ${seed}`;
  $("#arena-prompt").textContent = prompt;
  $("#arena").replaceChildren(...sides.map((side, i) => h("div", {
    class: "contender", dataset: { side: i === 0 ? "left" : "right", generationId: side.id } },
  h("div", { class: "contender-head" },
    h("span", { class: "contender-label" }, `Output ${i + 1}`), h("span", { class: "reveal" })),
  h("div", { class: "text-output" }, h("span", { class: "prompt-echo" }, prompt), h("span", { class: "generated" }, side.text)),
  h("button", { type: "button", class: "btn btn-primary prefer", title: `Prefer output ${i + 1} (key ${i + 1})`,
    onclick: () => choose(i).catch(reportError) }, `Prefer output ${i + 1}`))));
  $("#arena-skip").disabled = false;
  $("#arena-status").textContent = "";
}

/** Record the preference for side `i` (null: skip, nothing recorded), then reveal the names. */
async function choose(i) {
  const round = session.round;
  if (!round || round.decided) return;
  round.decided = true;
  const buttons = [...document.querySelectorAll("#arena .prefer"), $("#arena-skip")];
  buttons.forEach((b) => { b.disabled = true; });
  if (i != null) {
    try {
      await api("v1/preferences", { method: "POST",
        body: { chosen: round.sides[i].id, rejected: round.sides[1 - i].id } });
    } catch (err) {
      round.decided = false;
      buttons.forEach((b) => { b.disabled = false; });
      throw err;
    }
  }
  const tally = tallyOf();
  const winner = i == null ? null : round.sides[i].role;
  if (winner) tally[winner] += 1;
  else tally.skipped += 1;
  tally.rounds.push({ prompt: round.prompt, winner });
  reveal(i);
  renderTally();
  session.index += 1;
  const more = session.index < session.prompts.length;
  $("#arena-next").hidden = !more;
  $("#arena-status").textContent = i == null ? "Skipped: no preference recorded."
    : `✓ Preference recorded: the ${winner} (${round.sides[i].model}).`;
  if (!more) $("#compare-status").textContent = `All ${session.prompts.length} prompt${session.prompts.length === 1 ? "" : "s"} compared.`;
}

function reveal(chosen) {
  document.querySelectorAll("#arena .contender").forEach((box, i) => {
    const side = session.round.sides[i];
    box.classList.add("revealed", `is-${side.role}`);
    box.classList.toggle("chosen", i === chosen);
    box.dataset.role = side.role;
    box.querySelector(".reveal").replaceChildren(
      h("span", { class: `pill ${side.role === "child" ? "pill-accent" : ""}` }, side.role),
      h("span", { class: "mono reveal-model" }, side.model),
      ...(i === chosen ? [h("span", { class: "confirm" }, "✓ your pick")] : []));
  });
}

function renderTally() {
  const t = tallyOf();
  const decided = t.child + t.parent;
  const share = decided ? t.child / decided : 0.5;
  $("#tally-card").hidden = t.rounds.length === 0;
  $("#tally").replaceChildren(
    h("div", { class: "tally-side child" }, h("div", { class: "stat-value tally-child" }, String(t.child)),
      h("div", { class: "stat-label" }, "child ", h("span", { class: "mono" }, session.child))),
    h("div", { class: "tally-mid" },
      h("div", { class: "tally-bar" }, fill("tally-fill", share)),
      h("div", { class: "tally-rate" }, decided
        ? `child preferred in ${Math.round(share * 100)}% of ${decided} choice${decided === 1 ? "" : "s"}`
        : "no choice yet", t.skipped ? ` · ${t.skipped} skipped` : "")),
    h("div", { class: "tally-side parent" }, h("div", { class: "stat-value tally-parent" }, String(t.parent)),
      h("div", { class: "stat-label" }, "parent ", h("span", { class: "mono" }, session.parent))));
  $("#tally-rounds").replaceChildren(...t.rounds.map((r) => h("li", { class: r.winner ? `won-${r.winner}` : "skipped" },
    h("span", { class: "round-prompt" }, r.prompt),
    h("span", { class: `pill ${r.winner === "child" ? "pill-accent" : ""}` }, r.winner ? `${r.winner} preferred` : "skipped"))));
}

/** The child's parent, when the models list knows it: the pair to compare by default. */
function pairDefaults() {
  const child = modelById($("#compare-child").value);
  if (child && child.parent && modelById(child.parent)) $("#compare-parent").value = child.parent;
}

export async function showCompare() {
  await catalog.ready;
  const box = $("#compare-prompts");
  const parent = $("#compare-parent").value;
  if (box.value.trim() || !parent) return;
  // start from the prompts the parent was asked before: the ones its feedback is about
  const recent = await api(`v1/generations?kind=text&limit=50&model=${enc(parent)}`);
  const prompts = [...new Set((recent.data || []).map((g) => g.request && g.request.prompt)
    .filter((p) => typeof p === "string" && p.trim()))].slice(0, 6);
  if (!box.value.trim()) box.value = prompts.join("\n");
}

export function wireComparePage() {
  $("#compare-start").addEventListener("click", () => start().catch(reportError));
  $("#arena-next").addEventListener("click", () => nextRound().catch(reportError));
  $("#arena-skip").addEventListener("click", () => choose(null).catch(reportError));
  $("#compare-child").addEventListener("change", pairDefaults);
  document.addEventListener("keydown", (e) => {
    if ($("#page-compare").hidden || !session.round || session.round.decided) return;
    if (e.target.closest && e.target.closest("input, textarea, select")) return;
    if (e.key === "1" || e.key === "2") choose(Number(e.key) - 1).catch(reportError);
  });
}

onModelsLoaded(() => {
  const hadChild = $("#compare-child").value;
  fillModelSelect($("#compare-child"), "text");
  fillModelSelect($("#compare-parent"), "text");
  if (hadChild) return;
  // the list is newest first: by default the newest tuned version and its parent
  const tuned = catalog.models.find((m) => m.parent && m.modality === "text" && modelById(m.parent));
  if (tuned) $("#compare-child").value = tuned.id;
  pairDefaults();
});
