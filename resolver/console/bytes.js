// Byte helpers and the two primitives the browser checks with: SHA-256 and Ed25519, both WebCrypto.
export class VerifyError extends Error {
  // `key` names the i18n reason (under "why."), `args` fill it in.
  constructor(key, ...args) { super(`${key}: ${args.join(", ")}`); this.key = key; this.args = args; }
}

const encoder = new TextEncoder();
export const utf8 = (text) => encoder.encode(text);

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

export function equal(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function fromBase64(text, what) {
  if (typeof text !== "string") throw new VerifyError("malformed", `${what} is not base64 text`);
  let binary;
  try { binary = atob(text); } catch { throw new VerifyError("malformed", `${what} is not base64`); }
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export function webCryptoAvailable() {
  // Browsers withhold crypto.subtle outside a secure context (HTTPS, or http://localhost).
  return typeof crypto !== "undefined" && crypto.subtle !== undefined;
}

export async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

export async function ed25519Verify(publicKey, signature, message) {
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}
