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

/**
 * How long the number of a rule id whose rules have all gone waits before
 * another rule id may take it. Rule numbers only name rules in reports (the
 * kernel's policy entries and connections carry them for flow events; no
 * verdict depends on them), so what the wait covers is naming: events still
 * in the ring buffer, and connections stamped with the number until their
 * next packet is judged again, keep naming the rule that allowed them.
 */
export const RULE_NUMBER_QUARANTINE_MS = 10 * 60_000;

/**
 * Small stable numbers for rule ids ("web-to-api"), reported by flow events.
 * An id keeps its number while any rule of it is in force; once none is
 * (released), the number is handed to another id after the quarantine, so
 * the table follows the rules in force, not every id ever seen: Kubernetes
 * gives each pod rule ids of its own, and pods come and go.
 */
export class RuleNumbers {
  private readonly byId = new Map<string, number>();
  /** ids by number - 1 (numbers are dense from 1); a released number keeps naming its id until it is taken */
  private readonly byNumber: Array<string | undefined> = [];
  /** released numbers → when */
  private readonly free = new Map<number, number>();
  /** [number, when] in the order released (an entry whose time no longer matches `free` is stale) */
  private readonly queue: Array<[number, number]> = [];
  private head = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly quarantineMs = RULE_NUMBER_QUARANTINE_MS,
  ) {}

  number(ruleId: string): number {
    let n = this.byId.get(ruleId);
    if (n !== undefined) {
      // in force again before its number was taken: it keeps it
      this.free.delete(n);
      return n;
    }
    n = this.reusable() ?? this.byNumber.length + 1;
    this.byNumber[n - 1] = ruleId;
    this.byId.set(ruleId, n);
    return n;
  }

  name(n: number): string | undefined {
    return this.byNumber[n - 1];
  }

  /** No rule of this id is in force any more: its number may go to another id after the quarantine. */
  release(ruleId: string): void {
    const n = this.byId.get(ruleId);
    if (n === undefined || this.free.has(n)) return;
    const at = this.now();
    this.free.set(n, at);
    this.queue.push([n, at]);
  }

  /** Does this rule id hold a number (in force, or released and not yet taken)? */
  has(ruleId: string): boolean {
    return this.byId.has(ruleId);
  }

  /** Rule ids that hold a number (in force, or released and not yet taken). */
  get size(): number {
    return this.byId.size;
  }

  /** The oldest released number past its quarantine, taken from its old id. */
  private reusable(): number | undefined {
    const t = this.now();
    while (this.head < this.queue.length) {
      const [n, at] = this.queue[this.head]!;
      if (this.free.get(n) === at && t - at < this.quarantineMs) return undefined;
      this.head++;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      // taken back, or released again later (a newer entry stands for it)
      if (this.free.get(n) !== at) continue;
      this.free.delete(n);
      const old = this.byNumber[n - 1];
      if (old !== undefined) this.byId.delete(old);
      return n;
    }
    return undefined;
  }
}
