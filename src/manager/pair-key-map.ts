/**
 * A string map for the slice store's neighbour pairs, kept in typed arrays.
 *
 * At 5,000 containers the store's index of shared neighbour entries held
 * about 130,000 keys: a V8 Map of them (a 3.7 MB hash table in the large
 * object space) and a heap string per key (8 latin1 characters: the two
 * identities), about 6 MB with nothing in it that is not two numbers and a
 * value shared with every other entry. Here a key is two u32 in two
 * Uint32Arrays, found by open addressing with linear probing, and its value
 * an index into the few distinct values (a neighbour pair's "present" and
 * its holder count), about 2.5 MB at the same size and nothing for the
 * collector to mark.
 *
 * It does what SliceStore asks of a Map<string, string> (get, set, delete,
 * size, iteration) for keys of exactly 8 characters of one byte each (a
 * key of another length is never held: setting one throws); values are
 * interned, at most 65,535 distinct ones.
 */
import { u32Latin1 } from '../datapath/layout.js';

/** keys per slot array before it doubles: at most half full, so a probe stays short */
const MAX_LOAD = 0.5;
const MIN_CAPACITY = 1024;
/** two u32, one byte per character */
const KEY_LENGTH = 8;

export class PairKeyMap implements Iterable<[string, string]> {
  private lo: Uint32Array;
  private hi: Uint32Array;
  /** 0: empty slot; otherwise 1 + the index of the slot's value in `values` */
  private val: Uint16Array;
  private mask: number;
  private n = 0;
  private readonly values: string[] = [];
  private readonly valueIndex = new Map<string, number>();

  constructor(capacity = MIN_CAPACITY) {
    let c = MIN_CAPACITY;
    while (c < capacity) c *= 2;
    this.lo = new Uint32Array(c);
    this.hi = new Uint32Array(c);
    this.val = new Uint16Array(c);
    this.mask = c - 1;
  }

  get size(): number {
    return this.n;
  }

  get(key: string): string | undefined {
    if (key.length !== KEY_LENGTH) return undefined;
    const i = this.find(first(key), second(key));
    return i < 0 ? undefined : this.values[this.val[i]! - 1];
  }

  has(key: string): boolean {
    return key.length === KEY_LENGTH && this.find(first(key), second(key)) >= 0;
  }

  set(key: string, value: string): this {
    if (key.length !== KEY_LENGTH) throw new Error(`PairKeyMap: a key is ${KEY_LENGTH} one-byte characters, not ${key.length}`);
    const a = first(key);
    const b = second(key);
    const v = this.intern(value);
    const i = this.find(a, b);
    if (i >= 0) {
      this.val[i] = v;
      return this;
    }
    if ((this.n + 1) > (this.mask + 1) * MAX_LOAD) {
      this.resize((this.mask + 1) * 2);
      return this.set(key, value);
    }
    const slot = ~i;
    this.lo[slot] = a;
    this.hi[slot] = b;
    this.val[slot] = v;
    this.n++;
    return this;
  }

  delete(key: string): boolean {
    if (key.length !== KEY_LENGTH) return false;
    let i = this.find(first(key), second(key));
    if (i < 0) return false;
    this.n--;
    // Backward-shift deletion: pull later keys of the same probe run into
    // the hole, so that no lookup ever stops early at an emptied slot.
    let j = i;
    for (;;) {
      this.val[i] = 0;
      for (;;) {
        j = (j + 1) & this.mask;
        if (this.val[j] === 0) {
          this.maybeShrink();
          return true;
        }
        const home = slotOf(this.lo[j]!, this.hi[j]!, this.mask);
        // the key at j may move to i unless its home lies cyclically in (i, j]
        const stays = i <= j ? i < home && home <= j : i < home || home <= j;
        if (!stays) break;
      }
      this.lo[i] = this.lo[j]!;
      this.hi[i] = this.hi[j]!;
      this.val[i] = this.val[j]!;
      i = j;
    }
  }

  *[Symbol.iterator](): IterableIterator<[string, string]> {
    for (let i = 0; i <= this.mask; i++) {
      const v = this.val[i]!;
      if (v !== 0) yield [u32Latin1(this.lo[i]!) + u32Latin1(this.hi[i]!), this.values[v - 1]!];
    }
  }

  /** the slot of (a, b), or the one's complement of the empty slot where it would go */
  private find(a: number, b: number): number {
    let i = slotOf(a, b, this.mask);
    for (;;) {
      if (this.val[i] === 0) return ~i;
      if (this.lo[i] === a && this.hi[i] === b) return i;
      i = (i + 1) & this.mask;
    }
  }

  private intern(value: string): number {
    let v = this.valueIndex.get(value);
    if (v === undefined) {
      if (this.values.length >= 0xffff) throw new Error('PairKeyMap: more than 65,535 distinct values');
      this.values.push(value);
      this.valueIndex.set(value, (v = this.values.length));
    }
    return v;
  }

  /** after many deletions, give the arrays' memory back (a quarter as full as allowed) */
  private maybeShrink(): void {
    const c = this.mask + 1;
    if (c > MIN_CAPACITY && this.n < c * MAX_LOAD * 0.25) this.resize(c / 2);
  }

  private resize(capacity: number): void {
    const { lo, hi, val } = this;
    this.lo = new Uint32Array(capacity);
    this.hi = new Uint32Array(capacity);
    this.val = new Uint16Array(capacity);
    this.mask = capacity - 1;
    for (let i = 0; i < val.length; i++) {
      if (val[i] === 0) continue;
      const slot = ~this.find(lo[i]!, hi[i]!);
      this.lo[slot] = lo[i]!;
      this.hi[slot] = hi[i]!;
      this.val[slot] = val[i]!;
    }
  }
}

/** the key's first u32 (little-endian, one byte per character) */
function first(key: string): number {
  return (key.charCodeAt(0) | (key.charCodeAt(1) << 8) | (key.charCodeAt(2) << 16) | (key.charCodeAt(3) << 24)) >>> 0;
}

function second(key: string): number {
  return (key.charCodeAt(4) | (key.charCodeAt(5) << 8) | (key.charCodeAt(6) << 16) | (key.charCodeAt(7) << 24)) >>> 0;
}

/** where (a, b) starts probing: a multiplicative mix of both halves */
function slotOf(a: number, b: number, mask: number): number {
  let h = Math.imul(a ^ Math.imul(b, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 13;
  return h & mask;
}
