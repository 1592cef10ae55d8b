// Building elements without innerHTML: every text from the gateway goes in as text, never as markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

export function table(caption, headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))));
  // A focusable region, so a keyboard can scroll a table wider than the screen.
  return el("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": caption },
    el("table", {}, el("caption", { class: "sr-only" }, caption), el("thead", {}, head), el("tbody", {}, ...body)));
}
