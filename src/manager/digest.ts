/**
 * A map's content as one small number pair, to tell whether the kernel's
 * copy of a map equals the manager's without comparing entry by entry.
 *
 * The digest of a set of entries is the sum (mod 2^32) of a hash of each
 * entry's key and value bytes, under two different hashes: order does not
 * matter (a map read back from the kernel comes in its own order), and an
 * entry added or removed changes it by its own hash, so the slice store keeps
 * the digest of what it wants up to date as entries change, at the cost of
 * the change. A drift check then reads a map back in batches, hashes the
 * bytes as they come (no object per entry), and compares two numbers and a
 * count; only a map whose digest differs is compared entry by entry.
 *
 * These are not cryptographic hashes: they catch what goes wrong (a failed
 * write, an entry deleted or rewritten by hand or by another tool), not an
 * adversary crafting collisions; one who can write these maps is root and
 * can detach the programs as well.
 */

/** The two hashes of the last record hashed (no allocation per record). */
let h1 = 0;
let h2 = 0;

function finish(h: number): number {
  // murmur3's fmix32: every input bit affects every output bit
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashes `len` bytes of `data` from `off` into h1/h2 (FNV-1a, and a multiply-xorshift). */
function hashBytes(data: Uint8Array, off: number, len: number, a: number, b: number): void {
  for (let i = off, end = off + len; i < end; i++) {
    const c = data[i]!;
    a = Math.imul(a ^ c, 16777619);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  h1 = a;
  h2 = b;
}

function hashChars(s: string, a: number, b: number): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 16777619);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  h1 = a;
  h2 = b;
}

const SEED1 = 2166136261;
const SEED2 = 0x9747b28c;

export class MapDigest {
  sum1 = 0;
  sum2 = 0;
  count = 0;

  /** Adds (sign 1) or removes (sign -1) an entry given as latin1 strings (one character per byte). */
  addString(key: string, value: string, sign: 1 | -1): void {
    hashChars(key, SEED1, SEED2);
    hashChars(value, h1, h2);
    this.add(sign);
  }

  /** Adds every record of `data`: `count` records of keySize + valueSize bytes; only the first `hashedValue` bytes of each value count. */
  addRecords(data: Uint8Array, count: number, keySize: number, valueSize: number, hashedValue = valueSize): void {
    const stride = keySize + valueSize;
    for (let r = 0, off = 0; r < count; r++, off += stride) {
      hashBytes(data, off, keySize, SEED1, SEED2);
      hashBytes(data, off + keySize, hashedValue, h1, h2);
      this.add(1);
    }
  }

  private add(sign: 1 | -1): void {
    this.sum1 = (this.sum1 + sign * finish(h1)) >>> 0;
    this.sum2 = (this.sum2 + sign * finish(h2 ^ 0x68e31da4)) >>> 0;
    this.count += sign;
  }

  equals(o: MapDigest): boolean {
    return this.sum1 === o.sum1 && this.sum2 === o.sum2 && this.count === o.count;
  }

  toString(): string {
    return `${this.count}:${this.sum1.toString(16)}:${this.sum2.toString(16)}`;
  }
}
