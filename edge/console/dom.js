import { el } from "./shared/dom.js";

export { el };

// A captioned table in a focusable region, so a keyboard can scroll one wider than the screen.
export function table(caption, headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))));
  return el("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": caption },
    el("table", {}, el("caption", { class: "sr-only" }, caption), el("thead", {}, head), el("tbody", {}, ...body)));
}
