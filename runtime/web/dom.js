// Building elements without innerHTML: every text from the server goes in as text, never as markup.
// Shared by the root console and the gateway page (served to each under shared/, runtime/webassets.py).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}
