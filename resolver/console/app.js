// The console: a search form and a list of views. A new view (the trace tree, referral hops) is one
// module under views/ exporting id, load(identifier) and render(state), added to VIEWS.
import { el } from "./dom.js";
import { bindSelect, t } from "./i18n.js";
import { config } from "./node_api.js";
import * as history from "./views/history.js";
import * as record from "./views/record.js";

const VIEWS = [record, history];

const form = document.getElementById("search");
const input = document.getElementById("identifier");
const status = document.getElementById("status");
const container = document.getElementById("views");
const select = document.getElementById("lang");
let shown = [];  // [view, state | Error] of the last search, re-rendered when the language changes

document.getElementById("origin").textContent = config.origin;
document.title = `edgeroot: ${config.origin}`;

function render() {
  container.replaceChildren(...shown.map(([view, state]) =>
    state instanceof Error
      ? el("section", { "data-view": view.id }, el("p", { class: "verdict bad", role: "alert" }, t("error")(state.message)))
      : Object.assign(view.render(state), { id: `view-${view.id}` })));
}

async function search(identifier) {
  status.textContent = t("loading");
  container.replaceChildren();
  const states = await Promise.all(VIEWS.map((view) => view.load(identifier).catch((e) => e)));
  shown = VIEWS.map((view, i) => [view, states[i]]);
  status.textContent = "";
  render();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const identifier = input.value.trim();
  if (identifier) search(identifier);
});

bindSelect(select, render);
document.body.dataset.ready = "true";
