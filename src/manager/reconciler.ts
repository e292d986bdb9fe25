/**
 * The one path from what the manager wants to what the kernel holds.
 *
 *   desired state (the slices, src/manager/entries.ts)
 *     → net writes against what was written, in the one proven order
 *       (src/policy/diff.ts writeOrder)
 *     → applied (the datapath port)
 *     → on any error: the state is dirty, and a resync (read every map back,
 *       compare, repair, in that same order) runs with back-off until the
 *       maps are what the slices say.
 *
 * The same read-back is the drift check (check('periodic'), on demand
 * check('request')): an entry deleted, added or rewritten by hand or by
 * another tool is found and put right, counted and reported. At start-up it
 * removes what a previous run left (check('startup')).
 *
 * What a check costs. The maps are read in batches (the datapath port yields
 * to the event loop between them), each batch hashed into the map's digest
 * as it comes (digest.ts); the slice store keeps the digest of what it wants
 * up to date at every commit. A map whose digest and count match is in
 * sync: no entry becomes a JavaScript object. Only a map that differs is
 * compared entry by entry, and only its differences are written. Commits go
 * on while maps are read: the keys they write are recorded and left out of
 * both sides of the comparison (each record's hashes are kept, so the read
 * side loses them without a string per record): the kernel has what was
 * just written, or the write failed, which marks the state dirty by itself.
 * The comparison and any repair run inside the update queue.
 */
import type { Logger } from 'pino';
import type { MapName } from '../datapath/layout.js';
import { MAP_NAMES } from '../datapath/layout.js';
import { writeOrder, type IdentityCounts } from '../policy/diff.js';
import { MapDigest, keyHash, recordHashes, type RecordHashes } from './digest.js';
import { STORE_MAPS, SliceStore, toOp, u32At, writeFacts, type EntryChange, type MapOp } from './entries.js';
import type { DatapathPort } from './ports.js';

/** Why a check runs. */
export type CheckReason = 'startup' | 'periodic' | 'request' | 'resync' | 'reload';

/** One difference put right. */
export interface Repair {
  /** a map, or 'stack' for a program attachment */
  map: MapName | 'stack';
  /** missing: the kernel lacked it; extra: the kernel had it and nobody wants it; changed: another value; reattached: a stack put back; rediscovered: an endpoint found again on a new interface */
  kind: 'missing' | 'extra' | 'changed' | 'reattached' | 'rediscovered';
  /** the entry's key (hex), for maps */
  key?: string;
  /** identities the entry is about (policy, neighbour: endpoint and peer; ipcache and endpoint maps: the identity), when known */
  identity?: number;
  peer?: number;
  /** the interface, for stacks and endpoint entries */
  hostIfindex?: number;
  reason: CheckReason;
}

export interface MapCheck {
  /** entries the kernel holds */
  entries: number;
  state: 'in-sync' | 'repaired' | 'failed';
  missing: number;
  extra: number;
  changed: number;
}

export interface CheckReport {
  reason: CheckReason;
  at: string;
  ms: number;
  maps: Partial<Record<MapName, MapCheck>>;
  /** differences put right (at start-up: leftovers of a previous run removed) */
  repaired: number;
  /** every map was read, compared and, where needed, repaired without a failure */
  clean: boolean;
  error?: string;
}

export interface ReconcilerHealth {
  /** a write failed (or a repair did) since the maps were last known to be what the slices say */
  dirty: boolean;
  dirtySince?: string;
  lastError?: string;
  /** writes that failed, ever */
  failedWrites: number;
  /** a resync is scheduled or running */
  resyncing: boolean;
  resyncAttempts: number;
  nextResyncAt?: string;
  lastCheck?: CheckReport;
  /** differences repaired by drift checks and resyncs (not start-up leftovers), by map and kind */
  repairs: Record<string, Record<string, number>>;
}

export interface ReconcilerOptions {
  datapath: DatapathPort;
  log: Logger;
  /** runs `fn` in the manager's update queue (between commits, never during one) */
  serial<T>(fn: () => Promise<T>): Promise<T>;
  /** every repair (drift checks and resyncs; not start-up leftovers), as it is made */
  onRepair?(r: Repair): void;
  /** after a check repaired something (inside the update queue): established connections must meet the repaired policy */
  onRepaired?(): void;
  /**
   * An entry the kernel holds that no slice does, to be left alone: a stats
   * entry of a port guarded before its endpoint is known (the agent writes
   * it when it attaches), the config slot of an array map.
   */
  keepExtra?(map: MapName, key: string): boolean;
  /** resync back-off: first delay and ceiling (ms) */
  backoff?: { firstMs: number; maxMs: number };
}

/** Repairs reported one by one per check and map; beyond that, one summary line (the counters count them all). */
const REPORTED_PER_MAP = 32;

const ENDPOINT_MAPS: readonly MapName[] = [MAP_NAMES.endpointsByIp, MAP_NAMES.endpoints];
const RESOLUTION_MAPS: readonly MapName[] = [MAP_NAMES.ipcache, ...ENDPOINT_MAPS];

export class Reconciler {
  readonly store = new SliceStore();
  private dirtySince?: Date;
  private lastError?: string;
  /** bumped whenever the state becomes dirty: a check clears the state only if none happened since it began */
  private dirtyEpoch = 0;
  private failedWrites = 0;
  private resyncTimer?: NodeJS.Timeout;
  private nextResyncAt?: Date;
  private resyncAttempts = 0;
  private running?: Promise<CheckReport>;
  private lastCheck?: CheckReport;
  /** while a check runs: every key written meanwhile, per map (STORE_MAPS index), latin1 */
  private touched?: Array<Set<string>>;
  private readonly repairCounts = new Map<string, Map<string, number>>();
  private closed = false;

  constructor(private readonly o: ReconcilerOptions) {}

  /** Write what the replaced slices changed since the last flush (the store's commit, in writeOrder): how many writes, and whether all were made. */
  flush(): { ops: number; ok: boolean } {
    const ops = this.store.commit();
    return { ops: ops.length, ok: this.write(ops) };
  }

  /** Apply writes; a failure (some were applied, some not) makes the state dirty and schedules a resync. */
  private write(ops: MapOp[]): boolean {
    if (!ops.length) return true;
    if (this.touched) for (const op of ops) this.touched[STORE_MAPS.indexOf(op.map)]!.add(op.key.toString('latin1'));
    try {
      this.o.datapath.apply(ops);
      return true;
    } catch (err) {
      this.markDirty(err as Error);
      return false;
    }
  }

  private markDirty(err: Error): void {
    this.failedWrites++;
    this.dirtyEpoch++;
    this.dirtySince ??= new Date();
    this.lastError = err.message;
    const delay = this.scheduleResync();
    this.o.log.error({ err: err.message, resyncInMs: delay }, 'map write failed: the datapath may not enforce what the manager wants; resync scheduled');
  }

  get dirty(): boolean {
    return this.dirtySince !== undefined;
  }

  /** Schedules a resync after the back-off delay (unless one is scheduled); returns the delay. */
  private scheduleResync(): number {
    const { firstMs, maxMs } = this.o.backoff ?? { firstMs: 250, maxMs: 30_000 };
    const delay = Math.min(maxMs, firstMs * 2 ** Math.min(this.resyncAttempts, 20));
    if (this.resyncTimer || this.closed) return delay;
    this.nextResyncAt = new Date(Date.now() + delay);
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = undefined;
      this.nextResyncAt = undefined;
      this.resyncAttempts++;
      void this.check('resync');
    }, delay);
    this.resyncTimer.unref();
    return delay;
  }

  /**
   * Read every managed map back, compare it with what the slices say, and
   * put the differences right. Concurrent calls share one run.
   */
  check(reason: CheckReason): Promise<CheckReport> {
    if (this.running) return this.running;
    const run = this.runCheck(reason).finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }

  private async runCheck(reason: CheckReason): Promise<CheckReport> {
    const t0 = performance.now();
    const epoch = this.dirtyEpoch;
    const report: CheckReport = { reason, at: new Date().toISOString(), ms: 0, maps: {}, repaired: 0, clean: true };
    this.touched = STORE_MAPS.map(() => new Set<string>());
    try {
      // read and hashed outside the update queue (the reads yield between batches, so updates go on)
      const reads: MapRead[] = [];
      for (const map of STORE_MAPS) reads.push(await this.readMap(map));
      await this.o.serial(() => this.compareAndRepair(reads, report));
    } catch (err) {
      report.clean = false;
      report.error = (err as Error).message;
      this.o.log.error({ err: report.error, reason }, 'map check failed');
    } finally {
      this.touched = undefined;
    }
    report.ms = +(performance.now() - t0).toFixed(1);
    if (Object.values(report.maps).some((m) => m.state === 'failed')) report.clean = false;
    this.lastCheck = report;
    this.settleAfter(report, epoch);
    return report;
  }

  /** After a check: the state is clean again when the check was, and nothing failed since it began. */
  private settleAfter(report: CheckReport, epoch: number): void {
    if (!this.dirty) return;
    if (report.clean && this.dirtyEpoch === epoch) {
      this.o.log.warn({ dirtySince: this.dirtySince!.toISOString(), repaired: report.repaired, attempts: this.resyncAttempts }, 'resync done: the maps are what the manager wants again');
      this.dirtySince = undefined;
      this.lastError = undefined;
      this.resyncAttempts = 0;
      if (this.resyncTimer) clearTimeout(this.resyncTimer);
      this.resyncTimer = undefined;
      this.nextResyncAt = undefined;
      return;
    }
    this.scheduleResync();
  }

  /**
   * One map read back in batches and hashed as it comes; only the hashes are
   * kept (12 bytes a record), not the bytes: at 5,000 containers those were
   * 6 MB of buffers held for the length of every check, only to be looked at
   * when a map differs, which then reads it again (kernelEntries).
   */
  private async readMap(map: MapName): Promise<MapRead> {
    const m = STORE_MAPS.indexOf(map);
    const digest = new MapDigest();
    let hashes = recordHashes(1024);
    let count = 0;
    const keysOnly = map === MAP_NAMES.epStats;
    for await (const c of this.o.datapath.readMap(map)) {
      if (count + c.count > hashes.key.length) hashes = grow(hashes, Math.max(2 * hashes.key.length, count + c.count), count);
      digest.addRecords(c.keys, c.values, c.count, c.keySize, c.valueSize, keysOnly ? 0 : c.valueSize, hashes, count);
      count += c.count;
    }
    return { map, m, digest, hashes, count };
  }

  /**
   * A map read again as latin1 key → value (bastion_ep_stat: keys only,
   * values empty), to compare it entry by entry once its digest differs.
   * Done inside the update queue, so nothing of ours is written meanwhile.
   */
  private async kernelEntries(map: MapName): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const keysOnly = map === MAP_NAMES.epStats;
    for await (const c of this.o.datapath.readMap(map)) {
      for (let i = 0; i < c.count; i++) {
        const key = c.keys.toString('latin1', i * c.keySize, (i + 1) * c.keySize);
        out.set(key, keysOnly ? '' : c.values.toString('latin1', i * c.valueSize, (i + 1) * c.valueSize));
      }
    }
    return out;
  }

  /** Compare the maps read with what the slices say; write the differences in one order. Inside the update queue. */
  private async compareAndRepair(reads: MapRead[], report: CheckReport): Promise<void> {
    const changes: EntryChange[] = [];
    const kernelResolution = new Map<MapName, Map<string, string>>();
    for (const r of reads) {
      const check: MapCheck = { entries: r.digest.count, state: 'in-sync', missing: 0, extra: 0, changed: 0 };
      report.maps[r.map] = check;
      const keysOnly = r.map === MAP_NAMES.epStats;
      // Keys written since the check began are left out of both sides.
      const written = this.touched?.[r.m] ?? new Set<string>();
      let have = r.digest;
      let want = this.store.digest(r.map);
      if (written.size) {
        have = have.copy();
        want = want.copy();
        const writtenHashes = new Set<number>();
        for (const k of written) {
          writtenHashes.add(keyHash(k));
          const v = this.store.value(r.map, k);
          if (v !== undefined) want.addString(k, keysOnly ? '' : v, -1);
        }
        // by key hash alone (the bytes are not kept): a record that only
        // shares a written key's hash is left out too, the digests then
        // differ, and the map is compared entry by entry
        for (let i = 0; i < r.count; i++) {
          if (writtenHashes.has(r.hashes.key[i]!)) have.addContribution(r.hashes.c1[i]!, r.hashes.c2[i]!, -1);
        }
      }
      check.entries = have.count + written.size;
      if (have.equals(want)) continue;
      const kernel = await this.kernelEntries(r.map);
      if (RESOLUTION_MAPS.includes(r.map)) kernelResolution.set(r.map, kernel);
      const wanted = new Map(this.store.entries(r.map));
      for (const [key, value] of wanted) {
        if (written.has(key)) continue;
        const held = kernel.get(key);
        if (held === undefined) {
          check.missing++;
          changes.push({ map: r.map, key, before: undefined, after: value });
        } else if (!keysOnly && held !== value) {
          check.changed++;
          changes.push({ map: r.map, key, before: held, after: value });
        }
      }
      for (const [key, value] of kernel) {
        if (wanted.has(key) || written.has(key) || this.o.keepExtra?.(r.map, key)) continue;
        check.extra++;
        changes.push({ map: r.map, key, before: value, after: undefined });
      }
      if (check.missing + check.changed + check.extra) check.state = 'repaired';
    }
    if (!changes.length) return;
    // The order needs the identities of the state the kernel is in: the
    // store's, unless a resolution map itself differs.
    const counts = kernelResolution.size ? countKernel(kernelResolution, this.store) : this.store.identities;
    const order = writeOrder(changes.map(writeFacts), counts);
    const ok = this.write(order.map((i) => toOp(changes[i]!)));
    if (!ok) for (const r of reads) if (report.maps[r.map]!.state === 'repaired') report.maps[r.map]!.state = 'failed';
    report.repaired += changes.length;
    this.report(changes, report.reason);
    if (ok) this.o.onRepaired?.();
  }

  /** Count, log and pass on the repairs of a check (at start-up: leftovers of a previous run, logged once). */
  private report(changes: EntryChange[], reason: CheckReason): void {
    if (reason === 'startup') {
      const byMap: Record<string, number> = {};
      for (const c of changes) byMap[c.map] = (byMap[c.map] ?? 0) + 1;
      this.o.log.info({ entries: byMap }, 'map entries of a previous run brought in line');
      return;
    }
    const perMap = new Map<string, number>();
    for (const c of changes) {
      const kind: Repair['kind'] = c.before === undefined ? 'missing' : c.after === undefined ? 'extra' : 'changed';
      this.count(c.map, kind);
      const r: Repair = { map: c.map, kind, key: Buffer.from(c.key, 'latin1').toString('hex'), reason, ...subjectOf(c) };
      const n = (perMap.get(c.map) ?? 0) + 1;
      perMap.set(c.map, n);
      if (n <= REPORTED_PER_MAP) {
        this.o.log.warn({ map: r.map, kind, key: r.key, identity: r.identity, peer: r.peer, hostIfindex: r.hostIfindex, reason }, 'drift repaired: map entry');
        this.o.onRepair?.(r);
      }
    }
    for (const [map, n] of perMap) {
      if (n > REPORTED_PER_MAP) this.o.log.warn({ map, repaired: n, reported: REPORTED_PER_MAP, reason }, 'drift repaired: more entries of this map than reported one by one');
    }
  }

  /** Count a repair made elsewhere (stacks, rediscovered endpoints) and pass it on. */
  recordRepair(r: Repair): void {
    this.count(r.map, r.kind);
    this.o.onRepair?.(r);
  }

  private count(map: string, kind: string): void {
    let m = this.repairCounts.get(map);
    if (!m) this.repairCounts.set(map, (m = new Map()));
    m.set(kind, (m.get(kind) ?? 0) + 1);
  }

  health(): ReconcilerHealth {
    const repairs: ReconcilerHealth['repairs'] = {};
    for (const [map, kinds] of this.repairCounts) repairs[map] = Object.fromEntries(kinds);
    return {
      dirty: this.dirty,
      ...(this.dirtySince ? { dirtySince: this.dirtySince.toISOString() } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      failedWrites: this.failedWrites,
      resyncing: this.dirty && (this.resyncTimer !== undefined || this.running !== undefined),
      resyncAttempts: this.resyncAttempts,
      ...(this.nextResyncAt ? { nextResyncAt: this.nextResyncAt.toISOString() } : {}),
      ...(this.lastCheck ? { lastCheck: this.lastCheck } : {}),
      repairs,
    };
  }

  /** No resync is scheduled after this. */
  close(): void {
    this.closed = true;
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
  }
}

interface MapRead {
  map: MapName;
  m: number;
  digest: MapDigest;
  /** per record, in read order */
  hashes: RecordHashes;
  count: number;
}

function grow(h: RecordHashes, size: number, used: number): RecordHashes {
  const out = recordHashes(size);
  out.key.set(h.key.subarray(0, used));
  out.c1.set(h.c1.subarray(0, used));
  out.c2.set(h.c2.subarray(0, used));
  return out;
}

/** The resolution keys of the kernel's maps by identity (when they differ from the store's). */
function countKernel(kernel: Map<MapName, Map<string, string>>, store: SliceStore): IdentityCounts {
  const keys = new Map<number, number>();
  const eps = new Map<number, number>();
  const add = (m: Map<number, number>, id: number) => m.set(id, (m.get(id) ?? 0) + 1);
  for (const map of RESOLUTION_MAPS) {
    const entries = kernel.get(map) ?? new Map(store.entries(map));
    for (const value of entries.values()) {
      const id = u32At(value, 0);
      add(keys, id);
      if (map !== MAP_NAMES.ipcache) add(eps, id);
    }
  }
  return { keys: (id) => keys.get(id) ?? 0, endpointKeys: (id) => eps.get(id) ?? 0 };
}

/** What an entry is about, for the repair's report (layout.ts: where the identities are). */
function subjectOf(c: EntryChange): Pick<Repair, 'identity' | 'peer' | 'hostIfindex'> {
  const value = c.after ?? c.before;
  switch (c.map) {
    case MAP_NAMES.policy:
      return { identity: u32At(c.key, 4), peer: u32At(c.key, 8) };
    case MAP_NAMES.neigh:
      return { identity: u32At(c.key, 0), peer: u32At(c.key, 4) };
    case MAP_NAMES.ipcache:
    case MAP_NAMES.endpointsByIp:
      return value === undefined ? {} : { identity: u32At(value, 0) };
    case MAP_NAMES.endpoints:
      return { hostIfindex: u32At(c.key, 0), ...(value === undefined ? {} : { identity: u32At(value, 0) }) };
    case MAP_NAMES.epStats:
      return { hostIfindex: u32At(c.key, 0) };
    default:
      return {};
  }
}
