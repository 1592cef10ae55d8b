// The gateway page: the status snapshot (/v1/status) and the device table (/v1/devices), refreshed
// every 10 s. A new section is one render function here, fed by those two answers.
import { rejectChart } from "./chart.js";
import { el, table } from "./dom.js";
import { bindSelect, language, t } from "./i18n.js";

const REFRESH_MS = 10000;
const select = document.getElementById("lang");
let shown = null;  // {status, devices, at} of the last refresh, re-rendered when the language changes

const timeText = (ms) => new Date(ms).toLocaleString(language());
const clockText = (ms) => new Date(ms).toLocaleTimeString(language(), { hour: "2-digit", minute: "2-digit" });
const byId = (id) => document.getElementById(id);

function renderHealth(status) {
  const kinds = status.problem_kinds;
  if (kinds.length === 0) {
    byId("problems").replaceChildren(el("p", { class: "verdict ok" }, t("healthy")));
    return;
  }
  const items = kinds.map(({ kind, detail }) =>
    el("li", { "data-kind": kind }, t(`problems.${kind}`) || kind, detail ? ` (${detail})` : ""));
  byId("problems").replaceChildren(
    el("p", { class: "verdict bad", role: "alert" }, t("degraded")), el("ul", { class: "problems" }, ...items));
}

function renderConnectors(status) {
  const rows = Object.entries(status.connectors).map(([name, state]) => [el("code", {}, name), state]);
  byId("connector-table").replaceChildren(rows.length
    ? table(t("connectors"), [t("colConnector"), t("colState")], rows)
    : el("p", { class: "note" }, t("noConnectors")));
}

function renderChain(status) {
  const st = status.store;
  const last = st.last_anchored;
  const facts = [
    [t("sync"), status.sync],
    [t("backlog"), st.unchained_readings],
    [t("unanchored"), `${st.unanchored_blocks} (${t("blockStates")(st.blocks.chained, st.blocks.submitted)})`],
    [t("lastAnchored"), last ? t("anchoredAt")(last.height, last.log_index) : t("noneAnchored")],
    [t("accepted"), status.ingest.accepted],
    [t("refused"), status.refused],
  ];
  byId("chain-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function renderRejects(status) {
  const totals = status.store.rejects;
  const samples = status.reject_history;
  const parts = [el("p", { class: "note" }, t("rejectsNote"))];
  let inWindow = {};
  if (samples.length >= 2) {
    const minutes = Math.max(1, Math.round((samples[samples.length - 1].time_ms - samples[0].time_ms) / 60000));
    const drawn = rejectChart(samples, "", clockText);
    inWindow = drawn.inWindow;
    const sum = Object.values(inWindow).reduce((a, b) => a + b, 0);
    const label = t("chartLabel")(sum, minutes);
    drawn.chart.setAttribute("aria-label", label);
    drawn.chart.querySelector("title").textContent = label;
    parts.push(drawn.chart, drawn.legend);
  } else {
    parts.push(el("p", { class: "note" }, t("notEnough")));
  }
  const reasons = [...new Set([...Object.keys(totals), ...Object.keys(inWindow)])].sort();
  parts.push(reasons.length
    ? table(t("rejects"), [t("colReason"), t("colWindow"), t("colTotal")],
      reasons.map((r) => [el("code", {}, r), inWindow[r] || 0, totals[r] || 0]))
    : el("p", { class: "note" }, t("noRejects")));
  byId("reject-chart").replaceChildren(...parts);
}

function valuesText(records) {
  return (records || []).map((r) => `${r.name}=${r.value}${r.unit ? " " + r.unit : ""}`).join(", ");
}

function renderDevices(devices) {
  const keyText = { local: t("keyLocal"), registry: t("keyRegistry") };
  const rows = devices.devices.map((d) => {
    const last = d.last_reading;
    return [
      el("code", {}, d.identifier),
      keyText[d.key_source] || t("keyNone"),
      d.last_counter ?? "–",
      last ? timeText(last.received_ms) : t("noReading"),
      last ? valuesText(last.records) : "",
      last ? (last.block ?? t("notChained")) : "",
    ];
  });
  const parts = [];
  if (rows.length) {
    parts.push(table(t("devices"), [t("colDevice"), t("colKey"), t("colCounter"), t("colLastReading"),
      t("colValues"), t("colBlock")], rows));
  } else {
    parts.push(el("p", { class: "note" }, t("noDevices")));
  }
  if (devices.total > rows.length) parts.push(el("p", { class: "note" }, t("shownOf")(rows.length, devices.total)));
  byId("device-table").replaceChildren(...parts);
}

function render() {
  if (shown === null) return;
  const { status, devices, at } = shown;
  byId("gateway").textContent = status.gateway;
  document.title = `edgeroot: ${status.gateway}`;
  renderHealth(status);
  renderConnectors(status);
  renderChain(status);
  renderRejects(status);
  renderDevices(devices);
  byId("updated").textContent = t("updated")(timeText(at));
}

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  try {
    const [status, devices] = await Promise.all([fetchJson("/v1/status"), fetchJson("/v1/devices")]);
    shown = { status, devices, at: Date.now() };
    render();
  } catch (e) {
    byId("updated").textContent = t("fetchError")(e.message);
  }
  document.body.dataset.ready = "true";
}

bindSelect(select, render);
refresh();
setInterval(refresh, REFRESH_MS);
