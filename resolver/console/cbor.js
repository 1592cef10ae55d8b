// A small CBOR (RFC 8949) decoder for the deterministic items the node proves: unsigned and negative
// integers, byte and text strings, arrays, maps, null, true, false. Anything else is refused.
export class CborError extends Error {}

export function decodeCbor(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const need = (n) => { if (pos + n > bytes.length) throw new CborError("truncated"); };
  const argument = (info) => {
    if (info < 24) return info;
    const size = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (size === undefined) throw new CborError(`unsupported length encoding ${info}`);
    need(size);
    let value;
    if (size === 1) value = view.getUint8(pos);
    else if (size === 2) value = view.getUint16(pos);
    else if (size === 4) value = view.getUint32(pos);
    else {
      const big = view.getBigUint64(pos);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new CborError("integer too large");
      value = Number(big);
    }
    pos += size;
    return value;
  };
  const item = (depth) => {
    if (depth > 16) throw new CborError("nested too deeply");
    need(1);
    const initial = bytes[pos++];
    const major = initial >> 5;
    const info = initial & 31;
    if (major === 7) {
      if (info === 20) return false;
      if (info === 21) return true;
      if (info === 22) return null;
      throw new CborError(`unsupported simple value ${info}`);
    }
    const n = argument(info);
    switch (major) {
      case 0: return n;
      case 1: return -1 - n;
      case 2: need(n); pos += n; return bytes.slice(pos - n, pos);
      case 3: {
        need(n); pos += n;
        return new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(pos - n, pos));
      }
      case 4: { const out = []; for (let i = 0; i < n; i++) out.push(item(depth + 1)); return out; }
      case 5: {
        const out = new Map();
        for (let i = 0; i < n; i++) { const k = item(depth + 1); out.set(k, item(depth + 1)); }
        return out;
      }
      default: throw new CborError(`unsupported major type ${major}`);
    }
  };
  const value = item(0);
  if (pos !== bytes.length) throw new CborError("trailing bytes");
  return value;
}
