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
 * A map written to while it was read is still compared this way: each
 * record's hashes are kept (three numbers a record, in typed arrays), and
 * the keys written meanwhile are taken out of both sides (see
 * reconciler.ts). These are not cryptographic hashes: they catch what goes wrong (a failed
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

function contribution1(): number {
  return finish(h1);
}
function contribution2(): number {
  return finish(h2 ^ 0x68e31da4);
}

/** The hash of a key alone (latin1), as addRecords records it per record: to find a key among records without a string per record. */
export function keyHash(key: string): number {
  hashChars(key, SEED1, SEED2);
  return finish(h1);
}

/** Per record of a map read back: its key's hash and its two contributions to the digest. */
export interface RecordHashes {
  key: Uint32Array;
  c1: Uint32Array;
  c2: Uint32Array;
}

export function recordHashes(n: number): RecordHashes {
  return { key: new Uint32Array(n), c1: new Uint32Array(n), c2: new Uint32Array(n) };
}

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

  /**
   * Adds `count` records: packed keys of keySize bytes and packed values of
   * valueSize bytes (only the first `hashedValue` bytes of each value
   * count). Each record's key hash and its two contributions go to `out`
   * from `at` on.
   */
  addRecords(keys: Uint8Array, values: Uint8Array, count: number, keySize: number, valueSize: number, hashedValue: number, out: RecordHashes, at: number): void {
    for (let r = 0; r < count; r++) {
      hashBytes(keys, r * keySize, keySize, SEED1, SEED2);
      out.key[at + r] = finish(h1);
      hashBytes(values, r * valueSize, hashedValue, h1, h2);
      out.c1[at + r] = contribution1();
      out.c2[at + r] = contribution2();
      this.addContribution(out.c1[at + r]!, out.c2[at + r]!, 1);
    }
  }

  /** Adds (1) or removes (-1) one record by its contributions. */
  addContribution(c1: number, c2: number, sign: 1 | -1): void {
    this.sum1 = (this.sum1 + sign * c1) >>> 0;
    this.sum2 = (this.sum2 + sign * c2) >>> 0;
    this.count += sign;
  }

  private add(sign: 1 | -1): void {
    this.addContribution(contribution1(), contribution2(), sign);
  }

  copy(): MapDigest {
    const d = new MapDigest();
    d.sum1 = this.sum1;
    d.sum2 = this.sum2;
    d.count = this.count;
    return d;
  }

  equals(o: MapDigest): boolean {
    return this.sum1 === o.sum1 && this.sum2 === o.sum2 && this.count === o.count;
  }

  toString(): string {
    return `${this.count}:${this.sum1.toString(16)}:${this.sum2.toString(16)}`;
  }
}
