// SM2 signatures (GB/T 32918.2) and SM3 hashing (GB/T 32905) for an SM log's answers, which WebCrypto
// cannot check: the built files of the sm-crypto package (MIT), vendored unmodified under vendor/ (its
// version in the folder name; docs/decisions.md D-106). They are loaded on first use only, as classic
// scripts (each sets one global, `sm2` or `sm3`), so a SHA-256/Ed25519 node's page never fetches them.
// The SM2 check is the one chain_lite/sm2.py makes: e = SM3(Z_A || M), Z_A over the default identifier
// 1234567812345678 and the key, signature r || s with 0 < r, s < n (sm-crypto checks the range too).
import { VerifyError, concat, hex } from "./bytes.js";

const VENDOR = "./vendor/sm-crypto-0.5.8/";
const DEFAULT_ID = "1234567812345678";
let library = null;

function script(name) {
  return new Promise((resolve, reject) => {
    const element = document.createElement("script");
    element.src = new URL(VENDOR + name, import.meta.url).href;
    element.onload = resolve;
    element.onerror = () => reject(new VerifyError("smUnavailable", name));
    document.head.append(element);
  });
}

// {sm2, sm3} once both scripts ran; a failed load is retried on the next answer, never cached.
function load() {
  library ??= Promise.all([script("sm2.js"), script("sm3.js")])
    .then(() => {
      const { sm2, sm3 } = globalThis;
      if (typeof sm3 !== "function" || typeof sm2?.doVerifySignature !== "function") {
        throw new VerifyError("smUnavailable", "sm2.js, sm3.js");
      }
      return { sm2, sm3 };
    })
    .catch((e) => { library = null; throw e; });
  return library;
}

const fromHex = (text) => Uint8Array.from(text.match(/../g), (h) => parseInt(h, 16));

// SM3 of the concatenated parts, as sha256() gives SHA-256.
export async function sm3(...parts) {
  const { sm3: digest } = await load();
  return fromHex(digest(concat(...parts)));
}

// Whether `signature` (r || s, 64 bytes) is the SM2 signature of the key `point` (0x04 || x || y) over
// `message`, with the default distinguishing identifier.
export async function sm2Verify(point, signature, message) {
  if (point.length !== 65 || point[0] !== 0x04 || signature.length !== 64) return false;
  const { sm2 } = await load();
  return sm2.doVerifySignature(message, hex(signature), hex(point), { der: false, hash: true, userId: DEFAULT_ID }) === true;
}
