/* genloop studio: a single page over the HTTP API (docs/api.md), vanilla JS in ES modules, no build
 * step. This module routes between the pages (#/text, #/images, #/caption, #/history, #/improve, #/compare,
 * #/models), watches the server's health and starts everything; each page is its own module.
 *
 * Two rules hold in every module:
 * - Server data (model output, prompts, cards, error messages) only ever reaches the page as
 *   text: through h() in dom.js, which appends strings as text nodes, or textContent. No
 *   innerHTML: generated text may well contain "<script>".
 * - The key is never handled here. The browser's HTTP Basic auth (the key as password) covers
 *   every fetch of the page; every URL is relative to the page, so the API is found beside it.
 */

import { $, $$, reportError } from "./dom.js";
import { catalog, loadModels } from "./catalog.js";
import { wireTextPage } from "./text.js";
import { wireImagesPage } from "./images.js";
import { wireCaptionPage } from "./caption.js";
import { loadHistory, wireHistoryPage } from "./history.js";
import { renderModels } from "./models.js";
import { showImprove, wireImprovePage } from "./improve.js";
import { showCompare, wireComparePage } from "./compare.js";

const PAGES = {
  text: () => {},
  images: () => {},
  caption: () => {},
  history: () => loadHistory(true),
  improve: () => showImprove(),
  compare: () => showCompare(),
  models: () => renderModels(false),
};

function route() {
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
  const page = name in PAGES ? name : "text";
  $$(".page").forEach((p) => { p.hidden = p.dataset.page !== page; });
  $$(".nav a").forEach((a) => a.classList.toggle("active", a.dataset.route === page));
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · genloop studio`;
  Promise.resolve(PAGES[page]()).catch(reportError);
}

async function checkHealth() {
  const status = $("#server-status");
  try {
    const res = await fetch("health", { credentials: "same-origin" });
    const body = await res.json();
    status.dataset.state = res.ok && body.status === "ok" ? "ok" : "down";
    $(".label", status).textContent = res.ok ? `server ${body.status}` : `server ${res.status}`;
    $("#auth-banner").hidden = body.auth !== false;
  } catch (_) {
    status.dataset.state = "down";
    $(".label", status).textContent = "server unreachable";
  }
}

function start() {
  wireTextPage();
  wireImagesPage();
  wireCaptionPage();
  wireHistoryPage();
  wireImprovePage();
  wireComparePage();
  $("#models-refresh").addEventListener("click", () => renderModels(true).catch(reportError));
  catalog.ready = loadModels().catch(reportError);
  checkHealth();
  setInterval(checkHealth, 15_000);
  window.addEventListener("hashchange", route);
  route();
}

start();
