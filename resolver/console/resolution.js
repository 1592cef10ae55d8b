// Verifies one /v1/resolve answer in the browser (chain_lite/resolution.py, step for step) and
// returns every check with its outcome, so the page can say what was proven and what was not.
import { decodeCbor } from "./cbor.js";
import { VerifyError, fromBase64, utf8, webCryptoAvailable } from "./bytes.js";
import { checkLogSignature, checkQuorum, parseNote, parsePolicy } from "./note.js";
import { highestVerifiedSize, rememberVerifiedSize } from "./node_api.js";
import { LOG_HASHES, logLeafHash, parseMapProof, verifyInclusion, verifyMapProof } from "./proofs.js";

const RECEIPT_HEADER = "c2sp.org/tlog-proof@v1";
const MAP_HEAD_LABEL = "edgeroot/map-head/v1";
const RECORD_LABEL = "edgeroot/record/v1";
const PREFIX_HANDLE_PREFIX = "0.na";
const HASH_NAMES = { sha256: "SHA-256", sm3: "SM3" };

const asciiLower = (text) => text.replace(/[A-Z]/g, (c) => c.toLowerCase());

// The registry's key for an identifier (chain_lite.registry.canonical_identifier): prefix lowercase,
// suffix NFC with its ASCII letters lowercased; a prefix record's suffix is a prefix, all lowercase.
export function canonicalIdentifier(text) {
  const slash = text.indexOf("/");
  if (slash < 0) throw new VerifyError("malformed", "missing '/' between prefix and suffix");
  const prefix = asciiLower(text.slice(0, slash));
  const suffix = asciiLower(text.slice(slash + 1).normalize("NFC"));
  return `${prefix}/${suffix}`;
}

// C2SP tlog-proof@v1: header, optional extra, index, proof hashes, blank line, signed checkpoint.
export function parseReceipt(text) {
  if (typeof text !== "string") throw new VerifyError("malformed", "receipt is not text");
  const cut = text.indexOf("\n\n");
  if (cut < 0) throw new VerifyError("malformed", "receipt has no checkpoint");
  const lines = text.slice(0, cut).split("\n");
  if (lines.shift() !== RECEIPT_HEADER) throw new VerifyError("malformed", "receipt header");
  if (lines[0] && lines[0].startsWith("extra ")) lines.shift();
  const indexLine = lines.shift() || "";
  if (!/^index (0|[1-9][0-9]*)$/.test(indexLine)) throw new VerifyError("malformed", "receipt index");
  return {
    index: BigInt(indexLine.slice("index ".length)),
    proof: lines.map((h) => fromBase64(h, "receipt hash")),
    note: parseNote(text.slice(cut + 2)),
  };
}

function parseMapHead(leaf) {
  let item = null;
  if (leaf[0] === 0x03) {
    try { item = decodeCbor(leaf.slice(1)); } catch (e) { throw new VerifyError("inclusionBad", e.message); }
  }
  if (!Array.isArray(item) || item.length !== 4 || item[0] !== MAP_HEAD_LABEL || !(item[2] instanceof Uint8Array)) {
    throw new VerifyError("inclusionBad", "the proven leaf is not a map head");
  }
  return { epoch: BigInt(item[1]), root: item[2] };
}

export function decodeRecord(bytes) {
  let item;
  try { item = decodeCbor(bytes); } catch (e) { throw new VerifyError("mapBad", `record: ${e.message}`); }
  if (!Array.isArray(item) || item.length !== 3 || item[0] !== RECORD_LABEL || !Array.isArray(item[2])) {
    throw new VerifyError("mapBad", `record is not a 3-item array labelled ${RECORD_LABEL}`);
  }
  const values = item[2].map(([index, type, format, value, ttl, timestampMs]) =>
    ({ index, type, format, value, ttl, timestamp: new Date(timestampMs).toISOString().replace(/\.\d+Z$/, "Z") }));
  return { identifier: item[1], values };
}

// Runs `body` and turns its outcome into a check; a VerifyError is the check's reason.
async function check(name, body) {
  try {
    const outcome = await body();
    return { name, ...outcome };
  } catch (e) {
    if (e instanceof VerifyError) return { name, status: "bad", reason: [e.key, ...e.args] };
    return { name, status: "bad", reason: ["malformed", e.message] };
  }
}

const skipped = (name) => ({ name, status: "skipped", reason: ["skipped"] });

// `pinned` is node_api.policy()'s answer: the policy text and how it compares with this browser's pin.
export async function verifyResolution(asked, answer, pinned) {
  const found = answer.found === true;
  const mapName = found ? "checkMap" : "checkMapAbsent";
  const names = ["checkPolicy", "checkLogSig", "checkQuorum", "checkInclusion", mapName];
  if (!webCryptoAvailable()) {
    return { found, checks: names.map((name) => ({ name, status: "bad", reason: ["noWebCrypto"] })) };
  }
  let policy = null;
  const checks = [await check("checkPolicy", async () => {
    // A policy other than the pinned one proves nothing: the node could name its own keys in it.
    if (pinned.trust === "changed") throw new VerifyError("policyChanged", pinned.since);
    policy = await parsePolicy(pinned.text);
    const facts = [policy.logs.length, policy.witnesses.size, policy.quorum];
    return { status: "ok", reason: [pinned.trust === "pinnedNow" ? "policyPinnedNow" : "policyOk", ...facts] };
  })];
  let receipt = null;
  let parseFailure = null;
  try { receipt = parseReceipt(answer.proof && answer.proof.receipt); } catch (e) { parseFailure = e; }
  if (policy === null || receipt === null) {
    const failed = (name) => (parseFailure ? { name, status: "bad", reason: [parseFailure.key, ...parseFailure.args] } : skipped(name));
    return { found, checks: [...checks, ...names.slice(1).map(failed)] };
  }
  const note = receipt.note;
  checks.push(await check("checkLogSig", () => checkLogSignature(note, policy)));
  checks.push(await check("checkQuorum", () => checkQuorum(note, policy)));
  const log = policy.logs.find((l) => l.name === note.checkpoint.origin);
  const hash = note.checkpoint.hash;
  if (log && log.hash !== hash) {
    // The policy pins the log's hash; a checkpoint declaring another is not this log's (formats §3, §5).
    const mismatch = { status: "bad", reason: ["hashMismatch", log.hash, hash] };
    return { found, checks: [...checks, { name: "checkInclusion", ...mismatch }, skipped(mapName)] };
  }
  // Every proof below is checked with the log's own hash (SHA-256, or SM3 for an SM log), the one the
  // signed checkpoint declares and the policy pins.
  const H = LOG_HASHES[hash];
  let mapHead = null;
  checks.push(await check("checkInclusion", async () => {
    const size = note.checkpoint.size;
    // A log only grows: a checkpoint smaller than one this browser already verified for this log is a
    // rolled-back (or split) view, whatever its signatures say.
    const seen = highestVerifiedSize(note.checkpoint.origin);
    if (size < seen) throw new VerifyError("rolledBack", size, seen);
    // A current answer's map head is the checkpoint's last leaf: the newest map it commits to.
    if (receipt.index !== size - 1n) throw new VerifyError("stale", receipt.index, size);
    const leaf = fromBase64(answer.proof.map_head, "map head");
    await verifyInclusion(receipt.index, size, await logLeafHash(leaf, H), receipt.proof, note.checkpoint.root, H);
    mapHead = parseMapHead(leaf);
    if (mapHead.epoch !== receipt.index + 1n) throw new VerifyError("inclusionBad", "map head epoch is not its index + 1");
    return { status: "ok", reason: ["inclusionOk", receipt.index, size, HASH_NAMES[hash]] };
  }));
  let record = null;
  checks.push(mapHead === null ? skipped(mapName) : await check(mapName, async () => {
    const canonical = canonicalIdentifier(asked);
    const raw = answer.proof.record;
    if ((raw === null || raw === undefined) === found) throw new VerifyError("malformed", "'found' disagrees with the proof");
    let value = null;
    let decoded = null;
    if (found) {
      const bytes = fromBase64(raw, "record");
      decoded = decodeRecord(bytes);
      if (decoded.identifier !== canonical) throw new VerifyError("mapBad", `record is for ${decoded.identifier}`);
      value = await H(bytes);
    }
    const mapProof = parseMapProof(fromBase64(answer.proof.map_proof, "map proof"));
    await verifyMapProof(mapHead.root, await H(utf8(canonical)), value, mapProof, H);
    record = decoded;  // shown only once the map proof holds: unproven values are never displayed
    return { status: "ok", reason: [found ? "mapOk" : "mapAbsentOk"] };
  }));
  if (checks.every((c) => c.status === "ok")) rememberVerifiedSize(note.checkpoint.origin, note.checkpoint.size);
  return { found, checks, record, epoch: mapHead && mapHead.epoch };
}

// One word for the whole answer: every check passed, or some were only checked by the server, or not.
export function verdict(result) {
  const statuses = result.checks.map((c) => c.status);
  if (statuses.every((s) => s === "ok")) return result.found ? "proven" : "provenAbsent";
  if (statuses.every((s) => s === "ok" || s === "server")) return "serverOnly";
  return "notProven";
}


