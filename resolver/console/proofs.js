// The two proofs: RFC 6962 inclusion (chain_lite/merkle.py) and the sparse map (chain_lite/sparse_map.py:
// leaf prefix 0x10, node prefix 0x11, empty subtree = 32 zero bytes), in the log's hash: SHA-256 from
// WebCrypto or SM3 from sm.js (chain_lite/suite.py); only the function changes, never the structure.
import { decodeCbor } from "./cbor.js";
import { VerifyError, equal, sha256 } from "./bytes.js";
import { sm3 } from "./sm.js";

const MAP_PROOF_LABEL = "edgeroot/map-proof/v1";
const KEY_BITS = 256;
const EMPTY = new Uint8Array(32);

// A log's hash by the name its checkpoint and policy give it: async (...parts) => 32-byte digest.
export const LOG_HASHES = { sha256, sm3 };

export const logLeafHash = (leaf, hash = sha256) => hash(Uint8Array.of(0x00), leaf);

// RFC 9162 §2.1.3.2: the root an inclusion proof implies for leaf `index` of a tree of `size`.
export async function verifyInclusion(index, size, leafHash, proof, root, hash = sha256) {
  const logNodeHash = (left, right) => hash(Uint8Array.of(0x01), left, right);
  if (index >= size) throw new VerifyError("inclusionBad", `index ${index} is not below size ${size}`);
  let fn = index;
  let sn = size - 1n;
  let r = leafHash;
  for (const p of proof) {
    if (sn === 0n) throw new VerifyError("inclusionBad", "the proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await logNodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await logNodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new VerifyError("inclusionBad", "the proof is too short");
  if (!equal(r, root)) throw new VerifyError("inclusionBad", "the computed root is not the checkpoint's");
}

const bit = (key, depth) => (key[depth >> 3] >> (7 - (depth & 7))) & 1;

function commonPrefixBits(a, b) {
  for (let d = 0; d < KEY_BITS; d++) if (bit(a, d) !== bit(b, d)) return d;
  return KEY_BITS;
}

const isHash = (h) => h instanceof Uint8Array && h.length === 32;

export function parseMapProof(bytes) {
  let item;
  try { item = decodeCbor(bytes); } catch (e) { throw new VerifyError("mapBad", e.message); }
  if (!Array.isArray(item) || item.length !== 3 || item[0] !== MAP_PROOF_LABEL) {
    throw new VerifyError("mapBad", `not a 3-item array labelled ${MAP_PROOF_LABEL}`);
  }
  const [, siblings, terminal] = item;
  if (!Array.isArray(siblings) || siblings.length > KEY_BITS || !siblings.every(isHash)) {
    throw new VerifyError("mapBad", "siblings are not a list of 32-byte hashes");
  }
  if (terminal !== null && !(Array.isArray(terminal) && terminal.length === 2 && terminal.every(isHash))) {
    throw new VerifyError("mapBad", "terminal is neither null nor [key, value]");
  }
  return { siblings, terminal };
}

// Check that `key` maps to `value` (or, with value null, is absent) under `root`.
export async function verifyMapProof(root, key, value, proof, hash = sha256) {
  const { siblings, terminal } = proof;
  if (value === null) {
    if (terminal !== null && equal(terminal[0], key)) throw new VerifyError("mapBad", "the proof shows the key present");
  } else if (terminal === null || !equal(terminal[0], key) || !equal(terminal[1], value)) {
    throw new VerifyError("mapBad", "the proof does not end at this key and value");
  }
  let h = EMPTY;
  if (terminal !== null) {
    if (commonPrefixBits(key, terminal[0]) < siblings.length) {
      throw new VerifyError("mapBad", "the terminal entry does not lie on the key's path");
    }
    h = await hash(Uint8Array.of(0x10), terminal[0], terminal[1]);
  }
  for (let depth = siblings.length - 1; depth >= 0; depth--) {
    const s = siblings[depth];
    h = bit(key, depth) ? await hash(Uint8Array.of(0x11), s, h) : await hash(Uint8Array.of(0x11), h, s);
  }
  if (!equal(h, root)) throw new VerifyError("mapBad", "the computed root is not the map head's");
}
