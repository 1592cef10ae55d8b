// The history view: every logged change of the identifier with its log index.
import { el, table } from "../dom.js";
import { t } from "../i18n.js";
import { config, getJson } from "../node_api.js";

export const id = "history";

export async function load(identifier) {
  return getJson(config.history, identifier);
}

export function render(history) {
  const section = el("section", { "aria-labelledby": "history-h" },
    el("h2", { id: "history-h" }, t("history")),
    el("p", { class: "note" }, t("historyNote")));
  if (history.changes.length === 0) {
    section.append(el("p", {}, t("historyEmpty")));
    return section;
  }
  const rows = history.changes.map((c) => [
    String(c.log_index),
    c.op === "delete" ? t("opDelete") : t("opSet"),
    c.values.map((v) => `${v.index} ${v.type}: ${v.data.value}`).join("\n"),
  ]);
  section.append(table([t("colLogIndex"), t("colOp"), t("colValues")], rows));
  return section;
}
