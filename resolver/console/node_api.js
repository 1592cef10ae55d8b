// The node's routes, as the server rendered them from rootclient/routes.py into the page.
export const config = JSON.parse(document.getElementById("config").textContent);

// Percent-encode an identifier for a path, keeping the one "/" between prefix and suffix
// (rootclient.routes.quote_identifier).
export function quoteIdentifier(identifier) {
  const slash = identifier.indexOf("/");
  if (slash < 0) return encodeURIComponent(identifier);
  return `${encodeURIComponent(identifier.slice(0, slash))}/${encodeURIComponent(identifier.slice(slash + 1))}`;
}

export class NodeError extends Error {}

// A JSON answer of the node; an error answer becomes a NodeError with the node's message.
export async function getJson(prefix, identifier) {
  const response = await fetch(prefix + quoteIdentifier(identifier));
  let body;
  try { body = await response.json(); } catch { throw new NodeError(`HTTP ${response.status}`); }
  if (!response.ok) throw new NodeError(body && body.message ? body.message : `HTTP ${response.status}`);
  return body;
}

let policyText = null;

// The node's published trust policy, fetched once per page.
export async function policy() {
  if (policyText === null) {
    const response = await fetch(config.policy);
    if (!response.ok) throw new NodeError(`policy: HTTP ${response.status}`);
    policyText = await response.text();
  }
  return policyText;
}
