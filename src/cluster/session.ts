/**
 * One node's session with the cluster store.
 *
 * Writing: the node's record and its endpoints' records live under one
 * lease that the session keeps alive. The session keeps what it wants
 * published (desired) apart from what is known to be published, so that
 * whatever happens to etcd meanwhile (stopped, restarted, the lease expired
 * while the node was cut off) it converges: a failed write is retried with
 * back-off, a lost lease is granted again and everything is written again
 * under the new one, in the order it was asked for.
 *
 * Reading: one snapshot of nodes, endpoints and policies, then one watch of
 * the whole prefix from the snapshot's revision, applied batch by batch, in
 * revision order, to the ClusterView (view.ts), whose deltas go to the
 * listener (the daemon, which feeds the manager). A watch that falls behind
 * a compaction takes a new snapshot and reports the difference.
 */
import { EventEmitter } from 'node:events';
import type { Etcd3, IKeyValue, IWatchResponse, Lease, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import pLimit from 'p-limit';
import {
  CLUSTER_PREFIX,
  ENDPOINTS_PREFIX,
  NODES_PREFIX,
  POLICIES_PREFIX,
  endpointKey,
  nodeEndpointsPrefix,
  nodeKey,
  type EndpointRecord,
  type NodeRecord,
} from './keys.js';
import { etcdErrorText, kvMeta } from './etcd.js';
import { allocateIdentity, claimHolds, readIdentities, readIdentity } from './identities.js';
import { ClusterView, type KeyEvent, type ViewDelta } from './view.js';

export interface SessionOptions {
  client: Etcd3;
  node: string;
  nodeRecord: NodeRecord;
  /** seconds; a node silent this long is gone, and its endpoints with it */
  leaseTtlS: number;
  log: Logger;
}

export interface SessionStatus {
  node: string;
  connected: boolean;
  /** the watch is attached and caught up to a live stream */
  watching: boolean;
  lease?: { id: string; ttlS: number; renewedAgoMs?: number };
  /** writes that wait for the store to come back */
  pendingWrites: number;
  lastError?: string;
  revision: number;
}

const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 3000;

export class ClusterSession extends EventEmitter {
  readonly view: ClusterView;
  private readonly client: Etcd3;
  private lease?: Lease;
  private leaseId?: string;
  private lastRenewal?: number;
  /** own endpoint records we want published, by endpoint key */
  private readonly desired = new Map<string, EndpointRecord>();
  /** endpoint keys whose published state may differ from desired */
  private readonly dirty = new Set<string>();
  /** everything must be written again (new lease) */
  private full = true;
  /** the node record changed (written alone, unless everything is) */
  private nodeDirty = false;
  private flushing?: Promise<void>;
  private retryTimer?: NodeJS.Timeout;
  private retryMs = RETRY_MIN_MS;
  private watcher?: Watcher;
  private watchQueue: Promise<void> = Promise.resolve();
  private revision = 0;
  private watching = false;
  private connected = false;
  private lastError?: string;
  private closed = false;
  private publishing = false;
  private readonly limit = pLimit(16);

  constructor(private readonly o: SessionOptions) {
    super();
    this.client = o.client;
    this.view = new ClusterView(o.node);
  }

  get node(): string {
    return this.o.node;
  }

  // ------------------------------------------------------------ reading

  /**
   * Load the cluster (retrying until the store answers), start the watch,
   * and publish the node record. Resolves once the view holds the snapshot.
   */
  async start(onDelta: (d: ViewDelta) => void | Promise<void>): Promise<ViewDelta> {
    this.on('delta', (d: ViewDelta) => void onDelta(d));
    let waitMs = RETRY_MIN_MS;
    let first: ViewDelta | undefined;
    while (!first) {
      if (this.closed) throw new Error('cluster session closed');
      try {
        first = await this.resync();
      } catch (err) {
        this.failed('reading the cluster', err);
        await sleep(waitMs);
        waitMs = Math.min(waitMs * 2, RETRY_MAX_MS);
      }
    }
    return first;
  }

  /**
   * Start writing: the node record, then the endpoints set so far. Called
   * once the daemon has registered the endpoints it starts with, so that a
   * restarted daemon never deletes and re-creates its endpoints (which other
   * nodes would see as containers leaving and coming back).
   */
  beginPublishing(): void {
    this.publishing = true;
    this.kick();
  }

  /** Snapshot of nodes, endpoints and policies at one revision; returns what changed against the view. */
  private async resync(): Promise<ViewDelta> {
    const nodes = await this.client.getAll().prefix(NODES_PREFIX).exec();
    const rev = String(nodes.header.revision);
    const [eps, pols] = await Promise.all([
      this.client.getAll().prefix(ENDPOINTS_PREFIX).revision(rev).exec(),
      this.client.getAll().prefix(POLICIES_PREFIX).revision(rev).exec(),
    ]);
    const present = new Set<string>();
    const events: KeyEvent[] = [];
    for (const kv of [...nodes.kvs, ...eps.kvs, ...pols.kvs]) {
      const key = kv.key.toString();
      present.add(key);
      events.push(putEvent(kv));
    }
    for (const key of this.knownKeys()) if (!present.has(key)) events.push({ type: 'delete', key });
    await this.loadClaims(events);
    const delta = this.view.apply(events);
    this.revision = Number(rev);
    this.connected = true;
    await this.watch();
    return delta;
  }

  private knownKeys(): string[] {
    const keys: string[] = [];
    for (const n of this.view.nodes.keys()) keys.push(nodeKey(n));
    for (const e of this.view.endpoints.values()) keys.push(endpointKey(e.node, e.record.key));
    for (const p of this.view.policies.keys()) keys.push(`${POLICIES_PREFIX}${encodeURIComponent(p)}`);
    return keys;
  }

  private async loadClaims(events: readonly KeyEvent[]): Promise<void> {
    const missing = this.view.missingClaims(events);
    for (const [id, claim] of await readIdentities(this.client, missing)) this.view.claims.set(id, claim);
  }

  private async watch(): Promise<void> {
    await this.watcher?.cancel().catch(() => undefined);
    const w = await this.client.watch().prefix(CLUSTER_PREFIX).startRevision(String(this.revision + 1)).create();
    this.watcher = w;
    this.watching = true;
    w.on('data', (res: IWatchResponse) => {
      if (w !== this.watcher) return;
      this.watchQueue = this.watchQueue.then(() => this.onWatch(res));
    });
    w.on('connected', () => {
      this.watching = true;
      this.connected = true;
    });
    w.on('disconnected', (err: Error) => {
      this.watching = false;
      this.connected = false;
      this.failed('watch', err);
    });
    w.on('error', (err: Error) => {
      // canceled by etcd, typically because the revision we resume from was compacted
      if (w !== this.watcher) return;
      this.watching = false;
      this.failed('watch canceled, reading the cluster again', err);
      this.watchQueue = this.watchQueue.then(() => this.resyncUntilDone());
    });
  }

  private async resyncUntilDone(): Promise<void> {
    let waitMs = RETRY_MIN_MS;
    while (!this.closed) {
      try {
        const d = await this.resync();
        this.emit('delta', d);
        return;
      } catch (err) {
        this.failed('reading the cluster', err);
        await sleep(waitMs);
        waitMs = Math.min(waitMs * 2, RETRY_MAX_MS);
      }
    }
  }

  private async onWatch(res: IWatchResponse): Promise<void> {
    const events: KeyEvent[] = res.events.map((ev) => (ev.type === 'Delete' ? { type: 'delete' as const, key: ev.kv.key.toString() } : putEvent(ev.kv)));
    if (events.length === 0) return;
    // The identities the new records claim, before the view judges them;
    // if the store went away meanwhile, wait for it (order is kept).
    let waitMs = RETRY_MIN_MS;
    for (;;) {
      try {
        await this.loadClaims(events);
        break;
      } catch (err) {
        if (this.closed) return;
        this.failed('reading identity records', err);
        await sleep(waitMs);
        waitMs = Math.min(waitMs * 2, RETRY_MAX_MS);
      }
    }
    const delta = this.view.apply(events);
    this.revision = Math.max(this.revision, Number(res.header.revision));
    this.connected = true;
    this.emit('delta', delta);
  }

  // ------------------------------------------------------------ writing

  /** The prefixes this node's containers use (informational, in the node record). */
  setNodeSubnets(subnets: string[]): void {
    if (subnets.join() === this.o.nodeRecord.subnets.join()) return;
    this.o.nodeRecord = { ...this.o.nodeRecord, subnets };
    this.nodeDirty = true;
    this.kick();
  }

  /** Write the node record again (it was deleted while this node's lease lives). */
  republishNode(): void {
    if (this.closed || !this.publishing) return;
    this.nodeDirty = true;
    this.kick();
  }

  /** Publish (or update) one of this node's endpoints. */
  setEndpoint(rec: EndpointRecord): void {
    const cur = this.desired.get(rec.key);
    if (cur && JSON.stringify(cur) === JSON.stringify(rec)) return;
    this.desired.set(rec.key, rec);
    this.dirty.add(rec.key);
    this.kick();
  }

  deleteEndpoint(key: string): void {
    if (!this.desired.delete(key)) return;
    this.dirty.add(key);
    this.kick();
  }

  publishedKeys(): string[] {
    return [...this.desired.keys()];
  }

  /**
   * Fails with etcd's permission error if this credential may not write
   * these keys, and writes nothing: a transaction whose comparison never
   * holds (etcd checks the permissions of both branches).
   */
  async probeWrite(keys: string[]): Promise<void> {
    await this.client
      .if(keys[0]!, 'Create', '<', 0)
      .then(...keys.map((k) => this.client.put(k).value('')))
      .commit();
  }

  /** The lease this node's records hang on (undefined before the first grant). */
  currentLease(): string | undefined {
    return this.leaseId;
  }

  /** A new identity for one of this node's endpoints (a transaction on the counter). */
  allocateIdentity(endpoint: string): Promise<number> {
    return allocateIdentity(this.client, this.o.node, endpoint);
  }

  /** Was this identity granted to this node's endpoint? (re-adopting an identity after a restart) */
  async identityIsOurs(id: number, endpoint: string): Promise<boolean> {
    return claimHolds(await readIdentity(this.client, id), this.o.node, endpoint);
  }

  /** Write what is dirty, now or as soon as the store answers. */
  private kick(): void {
    if (this.closed || !this.publishing || this.flushing || this.retryTimer) return;
    this.flushing = this.flush()
      .then(
        () => {
          this.retryMs = RETRY_MIN_MS;
          this.lastError = undefined;
        },
        (err) => {
          this.failed('publishing', err);
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.kick();
          }, this.retryMs);
          this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
        },
      )
      .finally(() => {
        this.flushing = undefined;
        if (!this.retryTimer && (this.full || this.nodeDirty || this.dirty.size > 0)) this.kick();
      });
  }

  /** Resolves when everything asked for so far is written (for tests and `down`). */
  async settled(timeoutMs = 10_000): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      if (!this.flushing && !this.full && !this.nodeDirty && this.dirty.size === 0) return true;
      await (this.flushing ?? sleep(50)).catch(() => undefined);
      if (this.retryTimer) await sleep(50);
    }
    return false;
  }

  private async flush(): Promise<void> {
    const leaseId = await this.ensureLease();
    if (this.full) {
      this.full = false;
      this.nodeDirty = false;
      try {
        await this.client.put(nodeKey(this.o.node)).value(JSON.stringify(this.o.nodeRecord)).lease(leaseId).exec();
        // whatever is under our prefix and not wanted (a previous run's) goes
        const there = await this.client.getAll().prefix(nodeEndpointsPrefix(this.o.node)).keys();
        const wanted = new Set([...this.desired.keys()].map((k) => endpointKey(this.o.node, k)));
        await Promise.all(there.filter((k) => !wanted.has(k)).map((k) => this.limit(() => this.client.delete().key(k).exec())));
        for (const k of this.desired.keys()) this.dirty.add(k);
      } catch (err) {
        this.full = true;
        throw err;
      }
    }
    if (this.nodeDirty) {
      this.nodeDirty = false;
      try {
        await this.client.put(nodeKey(this.o.node)).value(JSON.stringify(this.o.nodeRecord)).lease(leaseId).exec();
      } catch (err) {
        this.nodeDirty = true;
        throw err;
      }
    }
    const batch = [...this.dirty];
    this.dirty.clear();
    const failed: string[] = [];
    let firstError: unknown;
    await Promise.all(
      batch.map((k) =>
        this.limit(async () => {
          const rec = this.desired.get(k);
          try {
            if (rec) await this.client.put(endpointKey(this.o.node, k)).value(JSON.stringify(rec)).lease(leaseId).exec();
            else await this.client.delete().key(endpointKey(this.o.node, k)).exec();
          } catch (err) {
            failed.push(k);
            firstError ??= err;
          }
        }),
      ),
    );
    for (const k of failed) this.dirty.add(k);
    if (firstError) throw firstError;
  }

  private async ensureLease(): Promise<string> {
    if (this.lease && this.leaseId && !this.lease.revoked()) return this.leaseId;
    const lease = this.client.lease(this.o.leaseTtlS, { autoKeepAlive: true });
    lease.on('lost', (err) => {
      if (lease !== this.lease) return;
      this.o.log.error({ err: etcdErrorText(err), node: this.o.node }, 'cluster lease lost: publishing everything again under a new lease');
      this.lease = undefined;
      this.leaseId = undefined;
      this.full = true;
      this.kick();
    });
    lease.on('keepaliveSucceeded', () => {
      if (lease === this.lease) this.lastRenewal = Date.now();
    });
    let id: string;
    try {
      id = await lease.grant();
    } catch (err) {
      lease.release();
      throw err;
    }
    this.lease = lease;
    this.leaseId = id;
    this.lastRenewal = Date.now();
    this.full = true;
    this.o.log.info({ node: this.o.node, lease: id, ttlS: this.o.leaseTtlS }, 'cluster lease granted');
    return id;
  }

  private failed(what: string, err: unknown): void {
    const text = etcdErrorText(err);
    if (text !== this.lastError) this.o.log.warn({ err: text, node: this.o.node }, `cluster store: ${what} failed`);
    this.lastError = text;
    if (/UNAVAILABLE|ECONNREFUSED|deadline|No connection|unavailable|timed out/i.test(text)) this.connected = false;
  }

  // ------------------------------------------------------------ status

  status(): SessionStatus {
    return {
      node: this.o.node,
      connected: this.connected,
      watching: this.watching,
      ...(this.leaseId
        ? { lease: { id: this.leaseId, ttlS: this.o.leaseTtlS, ...(this.lastRenewal ? { renewedAgoMs: Date.now() - this.lastRenewal } : {}) } }
        : {}),
      pendingWrites: this.dirty.size + (this.full || this.nodeDirty ? 1 : 0),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      revision: this.revision,
    };
  }

  /** Remaining and granted TTL of a lease (another node's: its health). */
  async leaseTtl(id: string): Promise<{ ttlS: number; grantedTtlS: number } | undefined> {
    if (!id || id === '0') return undefined;
    const r = await this.client.leaseClient.leaseTimeToLive({ ID: id });
    const ttl = Number(r.TTL);
    return ttl < 0 ? undefined : { ttlS: ttl, grantedTtlS: Number(r.grantedTTL) };
  }

  /**
   * Stop. `revoke` deletes this node's records at once (an orderly leave);
   * otherwise they stay until the lease expires (a daemon restart keeps the
   * node in the cluster meanwhile).
   */
  async close(opts: { revoke?: boolean } = {}): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    await this.watcher?.cancel().catch(() => undefined);
    if (opts.revoke) await this.lease?.revoke().catch(() => undefined);
    else this.lease?.release();
    this.client.close();
  }
}

function putEvent(kv: IKeyValue): KeyEvent {
  return { type: 'put', key: kv.key.toString(), value: kv.value.toString(), meta: kvMeta(kv) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref?.());
}
