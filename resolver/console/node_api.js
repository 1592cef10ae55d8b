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

let policyState = null;

// localStorage key of the policy this browser pinned for the node's log.
const PIN_KEY = `edgeroot.policy-pin.${config.origin}`;

// The node's published trust policy, fetched once per page, judged against the one this browser
// pinned the first time it met this log (trust on first use): a node cannot swap in a policy naming
// its own keys later without every check saying so. Returns { text, trust, since } where trust is
// "pinnedNow" (first use: pinned now), "pinned" (same as the pin) or "changed" (differs from it).
export async function policy() {
  if (policyState === null) {
    const response = await fetch(config.policy);
    if (!response.ok) throw new NodeError(`policy: HTTP ${response.status}`);
    const text = await response.text();
    let pin = null;
    try { pin = JSON.parse(localStorage.getItem(PIN_KEY)); } catch { pin = null; }
    if (!pin || typeof pin.text !== "string") {
      const since = new Date().toISOString();
      localStorage.setItem(PIN_KEY, JSON.stringify({ text, since }));
      policyState = { text, trust: "pinnedNow", since };
    } else {
      policyState = { text, trust: pin.text === text ? "pinned" : "changed", since: pin.since };
    }
  }
  return policyState;
}

// Forget the pinned policy (after the operator of the log announced a new one): pinned again next time.
export function forgetPolicyPin() {
  localStorage.removeItem(PIN_KEY);
  policyState = null;
}

// The largest checkpoint size this browser has fully verified for a log (0 before the first).
const sizeKey = (origin) => `edgeroot.verified-size.${origin}`;

export function highestVerifiedSize(origin) {
  const text = localStorage.getItem(sizeKey(origin));
  return text && /^[0-9]+$/.test(text) ? BigInt(text) : 0n;
}

export function rememberVerifiedSize(origin, size) {
  if (size > highestVerifiedSize(origin)) localStorage.setItem(sizeKey(origin), size.toString());
}
