/**
 * Numeric identities. Policy in the datapath is keyed by them, never by IP.
 *
 * An identity is never handed out twice, not even across restarts: the
 * counter lives in the pinned bastion_state map. A container that gets the
 * IP of a dead one therefore gets a new identity, and every policy entry,
 * neighbour entry and conntrack entry of the dead one (all keyed or checked
 * by identity) means nothing to it.
 */
import { ID_FIRST_DYNAMIC } from '../datapath/layout.js';

export interface IdentityStore {
  /** the next identity never handed out, or undefined if never stored */
  loadNext(): number | undefined;
  saveNext(next: number): void;
}

export class IdentityAllocator {
  private next: number;
  private readonly byKey = new Map<string, number>();

  constructor(private readonly store?: IdentityStore) {
    this.next = Math.max(ID_FIRST_DYNAMIC, store?.loadNext() ?? ID_FIRST_DYNAMIC);
  }

  /** The identity of `key`, allocating a fresh one the first time. */
  get(key: string): number {
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    const id = this.next++;
    this.byKey.set(key, id);
    this.store?.saveNext(this.next);
    return id;
  }

  /**
   * Adopt an identity found in the datapath after a restart (same endpoint,
   * same interface), so established connections keep their conntrack entries.
   */
  adopt(key: string, id: number): void {
    this.byKey.set(key, id);
    if (id >= this.next) {
      this.next = id + 1;
      this.store?.saveNext(this.next);
    }
  }

  peek(key: string): number | undefined {
    return this.byKey.get(key);
  }

  /** Forget a key for good: the identity is retired, never reused. */
  release(key: string): void {
    this.byKey.delete(key);
  }

  entries(): IterableIterator<[string, number]> {
    return this.byKey.entries();
  }
}

/** Small stable numbers for rule ids ("web-to-api"), reported by flow events. */
export class RuleNumbers {
  private readonly byId = new Map<string, number>();
  /** ids by number - 1 (numbers are dense from 1) */
  private readonly byNumber: string[] = [];

  number(ruleId: string): number {
    let n = this.byId.get(ruleId);
    if (n === undefined) {
      n = this.byNumber.push(ruleId);
      this.byId.set(ruleId, n);
    }
    return n;
  }

  name(n: number): string | undefined {
    return this.byNumber[n - 1];
  }
}
