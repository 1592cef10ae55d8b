// The record view: the resolved record, and each verification check with its outcome.
import { el, table } from "../dom.js";
import { t } from "../i18n.js";
import { config, getJson, policy } from "../node_api.js";
import { verdict, verifyResolution } from "../resolution.js";

export const id = "record";

export async function load(identifier) {
  const [answer, pinned] = await Promise.all([getJson(config.resolve, identifier), policy()]);
  const result = await verifyResolution(identifier, answer, pinned);
  return { identifier, answer, result };
}

const MARKS = { ok: "✓", bad: "✗", server: "!", skipped: "–" };

function reasonText([key, ...args]) {
  const text = t(`why.${key}`);
  return typeof text === "function" ? text(...args) : text;
}

export function render({ identifier, answer, result }) {
  const word = verdict(result);
  const ok = word === "proven" || word === "provenAbsent";
  const epoch = result.epoch ?? answer.proof?.epoch;
  const summary = result.found ? t("foundAsOf")(identifier, epoch) : t("absentAsOf")(identifier, epoch);
  const section = el("section", { "aria-labelledby": "record-h" },
    el("h2", { id: "record-h" }, t("record")),
    el("p", { class: `verdict ${ok ? "ok" : "bad"}`, id: "verdict", "data-verdict": word }, t(word)),
    el("p", {}, summary));
  if (!ok) section.append(el("p", { class: "note" }, t("notProvenNote")));
  // Only values from the proven record bytes are shown: the JSON copy is not what the proof covers.
  if (result.record) {
    const rows = result.record.values.map((v) => [String(v.index), v.type, v.value, String(v.ttl), v.timestamp]);
    section.append(table([t("colIndex"), t("colType"), t("colValue"), t("colTtl"), t("colTime")], rows));
  }
  const checks = el("ul", { class: "checks" }, ...result.checks.map((c) =>
    el("li", { class: `check ${c.status}`, "data-check": c.name, "data-status": c.status },
      el("span", { class: "mark", "aria-hidden": "true" }, MARKS[c.status]),
      el("span", { class: "name" }, `${t(c.name)}: ${c.status === "ok" ? t("proven") : c.status === "server" ? t("serverOnly") : t("notProven")}`),
      el("span", { class: "reason" }, reasonText(c.reason)))));
  section.append(el("h2", { id: "checks-h" }, t("verification")), checks);
  return section;
}
