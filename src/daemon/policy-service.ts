/**
 * Runtime policies as a service (`bastion policy`, /v1/policies): list, add
 * or replace, delete. A change is validated whole and applied to the
 * manager as a delta (only the rules of the change are compiled), then
 * saved; names of the config file's policies are not the API's to take.
 */
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { LoadedConfig } from './config-source.js';
import { RuntimePolicies, parsePoliciesDocument, policyRow, toDocumentPolicy } from './runtime-policies.js';
import type { PolicyConfig } from '../policy/bastion-config.js';
import { threadSched, schedBetween } from '../sys/thread-sched.js';
import { monotonicMs } from '../sys/clock.js';
import { fail, succeed, type Outcome, type PolicyAddResult, type PolicyChange, type PolicyDeleteResult, type PolicyRow, type RuntimePoliciesStatus } from '../api/types.js';

/** What the service needs to know of the config file's policies. */
export interface FilePolicies {
  readonly configPath?: string;
  readonly config?: LoadedConfig;
  fileNames(): Set<string>;
  clashes(config: LoadedConfig): string[];
}

/** In cluster mode the policies are the cluster's: the API lists them and changes none. */
export interface ClusterPolicies {
  rows(): PolicyRow[];
}

const CLUSTER_POLICIES = 'this node is in a cluster: its policies are the cluster\'s; use "bastion policy add|delete --cluster URL ..." (with the admin credentials)';

export class RuntimePolicyService {
  private manager?: Manager;
  private closing = false;

  constructor(
    readonly store: RuntimePolicies,
    private readonly file: FilePolicies,
    private readonly log: Logger,
    /** the platform's policies (published ports), listed with source "platform" */
    private readonly platformRows?: () => PolicyRow[],
    private readonly cluster?: ClusterPolicies,
  ) {}

  /**
   * Start-up, before the first apply: the policies a previous run saved.
   * Where the config file now defines a policy of the same name, the file
   * wins and the runtime one is dropped (and said so).
   */
  restore(first: LoadedConfig): void {
    if (this.cluster) return;
    const kept = this.store.load();
    if (kept.errors.length) {
      // loud: these policies are not enforced, and only an operator can say what they were
      this.log.error(
        { errors: kept.errors, keptAt: kept.keptAside },
        `saved runtime policies could not be read and are NOT enforced; the file is kept${kept.keptAside ? ` at ${kept.keptAside}` : ''} until someone looks at it and removes it`,
      );
    } else if (kept.loaded) this.log.info({ policies: kept.loaded }, 'runtime policies of the previous run restored');
    const clash = this.file.clashes(first);
    if (clash.length) {
      this.log.warn({ policies: clash }, 'the config file now defines policies of these names: the file wins, the runtime ones are dropped');
      this.store.delete(clash);
      void this.save();
    }
  }

  /** From now on changes go to this manager. */
  attach(manager: Manager): void {
    this.manager = manager;
  }

  /** No change starts after this. */
  close(): void {
    this.closing = true;
  }

  list(): PolicyRow[] {
    if (this.cluster) return this.cluster.rows();
    // the file's rows are made once per loaded config (250,000 of them for a 20 MB file)
    const config = this.file.config;
    let fileRows = config ? this.fileRows.get(config) : [];
    if (config && !fileRows) this.fileRows.set(config, (fileRows = config.policies.map((p) => policyRow(p, 'file'))));
    const rows = fileRows!.slice();
    for (const r of this.store.all()) rows.push(policyRow(r.policy, 'api', r.added));
    if (this.platformRows) rows.push(...this.platformRows());
    return rows;
  }
  private readonly fileRows = new WeakMap<LoadedConfig, PolicyRow[]>();

  /** Add or replace runtime policies from a policies document; all of it or nothing (or, dry run, only check it). */
  async add(text: string, source: string, opts: { dryRun?: boolean; receivedAt?: number } = {}): Promise<Outcome<PolicyAddResult>> {
    const receivedAt = opts.receivedAt ?? monotonicMs();
    // page faults cost 12 µs each on the development VM (docs/benchmarks.md): counted over the whole change
    const faultsBefore = process.resourceUsage().minorPageFault;
    const manager = this.manager;
    if (this.closing || !manager) return fail('stopping', ['daemon is stopping']);
    if (this.cluster) return fail('conflict', [CLUSTER_POLICIES]);
    const parseStart = performance.now();
    const parsed = parsePoliciesDocument(text, source);
    const parseMs = +(performance.now() - parseStart).toFixed(3);
    if (!parsed.ok) return fail('invalid', parsed.errors);
    const fileNames = this.file.fileNames();
    // A config-file policy given again exactly as the file has it is left as it is
    // (what `policy list -o yaml` prints can be fed back, as with kubectl); a
    // different one of that name is a conflict: the file owns the name.
    const unchanged = new Set<string>();
    const clash = parsed.policies.filter((p) => {
      if (!fileNames.has(p.name)) return false;
      if (this.sameAsFile(p)) unchanged.add(p.name);
      return !unchanged.has(p.name);
    });
    if (clash.length) {
      return fail(
        'conflict',
        clash.map((p) => `${source}: policy "${p.name}" is defined in the config file ${this.file.configPath}; change it there, or give this one another name`),
      );
    }
    const t0 = performance.now();
    const actions: PolicyChange[] = parsed.policies.map((p) => ({ name: p.name, action: unchanged.has(p.name) ? 'unchanged' : this.store.get(p.name) ? 'replaced' : 'created' }));
    if (opts.dryRun) return succeed({ dryRun: true, policies: actions });
    const { added, removed } = this.store.set(parsed.policies.filter((p) => !unchanged.has(p.name)));
    const before = threadSched();
    const stats = await manager.changeRules(added, removed);
    const writtenAt = monotonicMs();
    const sched = schedBetween(before, threadSched());
    const faults = process.resourceUsage().minorPageFault - faultsBefore;
    const ms = +(performance.now() - t0).toFixed(3);
    await this.save();
    // mono: when the request reached the daemon and when its writes were in the maps, on the
    // clock of process.hrtime (CLOCK_MONOTONIC), so that a benchmark can line them up with
    // its own and a probe's times (bench/lib/scale.ts: where an update's time goes)
    // parts: where the daemon's time went (parse and validate; then the manager's queue, compile, commit);
    // sched: over the manager's part, ms the daemon waited for a CPU and times it was taken off one;
    // faults: the process's minor page faults from the request to the writes
    this.log.info(
      { policies: actions, ops: stats.ops, ms, parts: { parse: parseMs, ...stats.parts }, sched, faults, mono: { received: +receivedAt.toFixed(3), written: +writtenAt.toFixed(3) } },
      'policies applied',
    );
    return succeed({ policies: actions, entries: stats.ops, ms });
  }

  /** Is this policy the config file's policy of the same name, as the file defines it? */
  private sameAsFile(p: PolicyConfig): boolean {
    const config = this.file.config;
    if (!config) return false;
    let byName = this.filePolicies.get(config);
    if (!byName) this.filePolicies.set(config, (byName = new Map(config.policies.map((f) => [f.name, f]))));
    const mine = byName.get(p.name);
    return !!mine && JSON.stringify(toDocumentPolicy(mine)) === JSON.stringify(toDocumentPolicy(p));
  }
  private readonly filePolicies = new WeakMap<LoadedConfig, Map<string, PolicyConfig>>();

  /** Delete runtime policies: all of the names, or none when one is not a runtime policy. */
  async delete(names: string[]): Promise<Outcome<PolicyDeleteResult>> {
    const manager = this.manager;
    if (this.closing || !manager) return fail('stopping', ['daemon is stopping']);
    if (this.cluster) return fail('conflict', [CLUSTER_POLICIES]);
    if (names.length === 0 || names.some((n) => !n)) return fail('bad-request', ['give the names of the policies to delete']);
    const fileNames = this.file.fileNames();
    const unknown = names.filter((n) => !this.store.get(n));
    if (unknown.length) {
      const errors = unknown.map((n) => (fileNames.has(n) ? `policy "${n}" comes from the config file ${this.file.configPath}; remove it there` : `no runtime policy "${n}"`));
      return fail(unknown.some((n) => fileNames.has(n)) ? 'conflict' : 'not-found', errors);
    }
    const t0 = performance.now();
    const removed = this.store.delete(names);
    const stats = await manager.changeRules([], removed);
    const ms = +(performance.now() - t0).toFixed(3);
    await this.save();
    this.log.info({ policies: names, ops: stats.ops, ms }, 'policies deleted');
    return succeed({ deleted: names, entries: stats.ops, ms });
  }

  /** For status and metrics: what is in force, what could not be read, whether the last save failed. */
  health(): RuntimePoliciesStatus {
    return { count: this.store.size, unreadable: this.store.unreadableCopies(), ...(this.saveError ? { saveError: this.saveError } : {}) };
  }

  /** Saves that failed since the daemon started. */
  saveFailures = 0;
  private saveError?: string;

  /** Never throws: a failed save is logged, counted and shown by status. */
  private async save(): Promise<void> {
    try {
      await this.store.save();
      this.saveError = undefined;
    } catch (err) {
      // Enforcement is already in place; only a restart would forget it: status and metrics say so until a save works.
      this.saveFailures++;
      this.saveError = (err as Error).message;
      this.log.error({ err: this.saveError }, 'could not save the runtime policies: a restart would lose them');
    }
  }
}
