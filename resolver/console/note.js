// C2SP signed-note, checkpoint, tlog-cosignature v1 and tlog-policy, as chain_lite/note.py,
// checkpoint.py, cosignature.py and policy.py define them, with edgeroot's SM2 note types (D-062).
import { VerifyError, concat, ed25519Verify, equal, fromBase64, sha256, utf8 } from "./bytes.js";
import { sm2Verify } from "./sm.js";

export const SIGTYPE_ED25519 = 0x01;
export const SIGTYPE_COSIGNATURE_V1 = 0x04;
const DASH = "\u2014 ";

// Log hashes a policy may pin (chain_lite/suite.py): SHA-256 from WebCrypto, SM3 from sm.js.
const LOG_HASHES = new Set(["sha256", "sm3"]);

// edgeroot's SM2 note keys (docs/formats.md §20): type 0xff, an identifier, then the 65-byte point.
// An SM log's own key (`root init --suite sm`) and an SM2 witness's.
const SM2_LOG = utf8("edgeroot/sm2/v1");
const SM2_COSIGNATURE = utf8("edgeroot/sm2-cosignature/v1");
const isSm2 = (vkey, kind) =>
  vkey.sigtype === 0xff && vkey.publicKey.length === kind.length + 65 &&
  equal(vkey.publicKey.slice(0, kind.length), kind);
const sm2Point = (vkey, kind) => vkey.publicKey.slice(kind.length);

// How this page checks a log key's signature over the note text, by its type: Ed25519 (WebCrypto) or
// SM2 (sm.js); null for a type it does not know, reported as "checked by the server only".
function logAlgorithm(log) {
  if (log.sigtype === SIGTYPE_ED25519) return { name: "Ed25519", verify: (sig, msg) => ed25519Verify(log.publicKey, sig, msg) };
  if (isSm2(log, SM2_LOG)) return { name: "SM2", verify: (sig, msg) => sm2Verify(sm2Point(log, SM2_LOG), sig, msg) };
  return null;
}

// The same for a witness key's cosignatures (tlog-cosignature v1 layout: timestamp, then the signature).
function cosignatureVerifier(vkey) {
  if (vkey.sigtype === SIGTYPE_COSIGNATURE_V1) return (sig, msg) => ed25519Verify(vkey.publicKey, sig, msg);
  if (isSm2(vkey, SM2_COSIGNATURE)) return (sig, msg) => sm2Verify(sm2Point(vkey, SM2_COSIGNATURE), sig, msg);
  return null;
}

// The key ID of a note key: the first 4 bytes of SHA-256(name || 0x0A || sigtype || public key).
export async function keyId(name, sigtype, publicKey) {
  return (await sha256(utf8(name), Uint8Array.of(0x0a, sigtype), publicKey)).slice(0, 4);
}

// A verifier key "name+hex(key ID)+base64(sigtype || public key)", its key ID checked.
export async function parseVkey(text) {
  // Names hold no "+", but base64 may: split at the first two only.
  const first = text.indexOf("+");
  const second = text.indexOf("+", first + 1);
  if (first < 1 || second < 0) throw new VerifyError("policyBad", `bad verifier key ${text}`);
  const [name, id, key] = [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
  const raw = fromBase64(key, "verifier key");
  if (raw.length < 2) throw new VerifyError("policyBad", `verifier key ${name} is empty`);
  const vkey = { name, sigtype: raw[0], publicKey: raw.slice(1), keyId: hexToBytes(id) };
  if (!equal(vkey.keyId, await keyId(name, vkey.sigtype, vkey.publicKey))) {
    throw new VerifyError("policyBad", `key ID of ${name} does not match its key`);
  }
  return vkey;
}

function hexToBytes(text) {
  if (!/^[0-9a-f]{8}$/.test(text)) throw new VerifyError("policyBad", `bad key ID ${text}`);
  return Uint8Array.from(text.match(/../g), (h) => parseInt(h, 16));
}

// tlog-policy text: log, witness, group and quorum lines, with every rule chain_lite/policy.py
// enforces: a name is defined once (witnesses and groups share one namespace), no public key is listed
// twice (one witness under two names would count twice towards a quorum), group members are defined
// earlier and listed once, thresholds are all, any or a number within the group's size.
export async function parsePolicy(text) {
  const policy = { logs: [], witnesses: new Map(), groups: new Map(), quorum: null };
  const defined = (name) => policy.witnesses.has(name) || policy.groups.has(name);
  const newName = (name) => {
    if (!name || name === "none" || defined(name)) throw new VerifyError("policyBad", `name ${name} is defined twice or reserved`);
  };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/^[ \t]+|[ \t]+$/g, "");
    if (!line || line.startsWith("#")) continue;
    const [keyword, ...args] = line.split(/[ \t]+/);
    if (keyword === "log") {
      if (args.length < 1 || args.length > 2) throw new VerifyError("policyBad", "log takes a vkey and an optional URL");
      policy.logs.push({ ...(await parseVkey(args[0])), hash: "sha256" });
    } else if (keyword === "log-hash") {
      // A log pinned to its hash, docs/formats.md §5: its proofs are checked with that hash, never
      // another; an unknown hash is refused.
      if (!LOG_HASHES.has(args[0])) throw new VerifyError("policyBad", `unknown log hash ${args[0]}`);
      if (args.length < 2 || args.length > 3) throw new VerifyError("policyBad", "log-hash takes a hash, a vkey and an optional URL");
      policy.logs.push({ ...(await parseVkey(args[1])), hash: args[0] });
    } else if (keyword === "witness") {
      if (args.length < 2 || args.length > 3) throw new VerifyError("policyBad", "witness takes a name, a vkey and an optional URL");
      newName(args[0]);
      const vkey = await parseVkey(args[1]);
      if (cosignatureVerifier(vkey) === null) {
        throw new VerifyError("policyBad", `witness ${args[0]} is not a cosignature key`);
      }
      policy.witnesses.set(args[0], vkey);
    } else if (keyword === "group") {
      const [name, threshold, ...members] = args;
      if (members.length < 1) throw new VerifyError("policyBad", "group takes a name, a threshold and at least one member");
      newName(name);
      if (new Set(members).size !== members.length) throw new VerifyError("policyBad", `group ${name} lists a member twice`);
      for (const member of members) {
        if (!defined(member)) throw new VerifyError("policyBad", `group ${name} refers to undefined name ${member}`);
      }
      const k = threshold === "all" ? members.length : threshold === "any" ? 1
        : /^[0-9]{1,5}$/.test(threshold) ? Number(threshold) : NaN;
      if (!Number.isInteger(k) || k < 1 || k > members.length) {
        throw new VerifyError("policyBad", `group ${name} has a bad threshold`);
      }
      policy.groups.set(name, { threshold: k, members });
    } else if (keyword === "quorum") {
      if (args.length !== 1 || policy.quorum !== null) throw new VerifyError("policyBad", "one quorum line with one name");
      policy.quorum = args[0];
    } else {
      throw new VerifyError("policyBad", `unknown keyword ${keyword}`);
    }
  }
  if (policy.quorum === null) throw new VerifyError("policyBad", "no quorum line");
  if (policy.quorum !== "none" && !defined(policy.quorum)) {
    throw new VerifyError("policyBad", `quorum ${policy.quorum} is not defined`);
  }
  const keys = [...policy.logs, ...policy.witnesses.values()].map((v) => [...v.publicKey].join(","));
  if (new Set(keys).size !== keys.length) throw new VerifyError("policyBad", "the same public key is listed twice");
  return policy;
}

export function quorumMet(policy, cosigners) {
  const witnessed = (name) => {
    if (name === "none") return true;
    const group = policy.groups.get(name);
    if (!group) return cosigners.has(name);
    return group.members.filter(witnessed).length >= group.threshold;
  };
  return witnessed(policy.quorum);
}

// A signed note: the text (ending in a newline) and its signature lines, after the last blank line.
export function parseNote(text) {
  const cut = text.lastIndexOf("\n\n");
  if (cut < 0) throw new VerifyError("malformed", "checkpoint note has no signature block");
  const body = text.slice(0, cut + 1);
  const signatures = [];
  for (const line of text.slice(cut + 2).split("\n")) {
    if (!line) continue;
    if (!line.startsWith(DASH)) throw new VerifyError("malformed", "bad signature line");
    const [name, sig, extra] = line.slice(DASH.length).split(" ");
    if (extra !== undefined) throw new VerifyError("malformed", "bad signature line");
    const raw = fromBase64(sig, "signature");
    if (raw.length < 5) throw new VerifyError("malformed", "signature too short");
    signatures.push({ name, keyId: raw.slice(0, 4), signature: raw.slice(4) });
  }
  const lines = body.split("\n");
  if (lines.length < 4) throw new VerifyError("malformed", "checkpoint has fewer than three lines");
  const size = lines[1];
  if (!/^(0|[1-9][0-9]*)$/.test(size)) throw new VerifyError("malformed", "checkpoint size is not decimal");
  // A first extension line "hash <name>" declares a log that does not hash with SHA-256 (formats §3).
  let hash = "sha256";
  if (lines.length > 4 && lines[3].startsWith("hash ")) {
    hash = lines[3].slice("hash ".length);
    if (hash === "sha256" || !LOG_HASHES.has(hash)) throw new VerifyError("malformed", `the checkpoint declares ${lines[3]}`);
  }
  return {
    body,
    signatures,
    checkpoint: { origin: lines[0], size: BigInt(size), root: fromBase64(lines[2], "checkpoint root"), hash },
  };
}

const signedBy = (note, vkey) => note.signatures.filter((s) => s.name === vkey.name && equal(s.keyId, vkey.keyId));

// The log's signature over the note text (Ed25519 or SM2): {status, reason: [key, ...args]}.
export async function checkLogSignature(note, policy) {
  const origin = note.checkpoint.origin;
  const log = policy.logs.find((l) => l.name === origin);
  if (!log) return { status: "bad", reason: ["noLogKey", origin] };
  const algorithm = logAlgorithm(log);
  if (algorithm === null) return { status: "server", reason: ["unsupported", `0x${log.sigtype.toString(16).padStart(2, "0")}`] };
  const lines = signedBy(note, log);
  if (lines.length === 0) return { status: "bad", reason: ["logSigMissing", log.name] };
  for (const line of lines) {
    const ok = line.signature.length === 64 && await algorithm.verify(line.signature, utf8(note.body));
    if (!ok) return { status: "bad", reason: ["logSigBad", log.name] };
  }
  return { status: "ok", reason: ["logSigOk", log.name, algorithm.name] };
}

// Witness cosignatures (tlog-cosignature v1, Ed25519 or SM2) against the policy's quorum. A known
// witness's line that fails to verify rejects the note, as signed-note requires.
export async function checkQuorum(note, policy) {
  const cosigners = new Set();
  for (const [name, vkey] of policy.witnesses) {
    const verify = cosignatureVerifier(vkey); // never null: parsePolicy refuses other witness keys
    for (const line of signedBy(note, vkey)) {
      const sig = line.signature;
      let ok = sig.length === 72;
      if (ok) {
        const time = new DataView(sig.buffer, sig.byteOffset, 8).getBigUint64(0);
        const message = concat(utf8(`cosignature/v1\ntime ${time}\n`), utf8(note.body));
        ok = time < 2n ** 63n && await verify(sig.slice(8), message);
      }
      if (!ok) return { status: "bad", reason: ["cosigBad", name] };
      cosigners.add(name);
    }
  }
  const names = [...cosigners].join(", ");
  if (policy.quorum === "none") return { status: "ok", reason: ["quorumNone"] };
  if (!quorumMet(policy, cosigners)) return { status: "bad", reason: ["quorumShort", names, policy.quorum] };
  return { status: "ok", reason: ["quorumOk", names, policy.quorum] };
}
