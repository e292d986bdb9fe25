/**
 * `bastion run`: the daemon. It applies a config (and/or follows a platform),
 * re-applies on change of the file and on SIGHUP as a delta, serves the API,
 * and turns datapath events into JSON log lines. When it stops, for whatever
 * reason, enforcement stays: the programs stay attached and the maps pinned.
 */
import { watch, writeFileSync, mkdirSync, rmSync, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Server } from 'node:http';
import pino, { type Logger } from 'pino';
import pLimit from 'p-limit';
import { Manager } from './manager.js';
import { collectStatus, type StatusReport } from './status.js';
import { createMetrics } from './metrics.js';
import type { EndpointSpec, PlatformEvent } from './endpoint.js';
import type { Discovered } from './ports.js';
import type { PolicySet } from '../policy/model.js';
import { loadConfigSource, type LoadedConfig } from './config-source.js';
import { describeFlow, FlowStore } from '../agent/flow-log.js';
import { startApiServer } from '../api/server.js';
import { apiCall } from '../api/client.js';
import { pidFileFor, policiesFileFor, socketPathFor } from '../api/paths.js';
import { RuntimePolicies, parsePoliciesDocument, policyRow, type PolicyRow } from './runtime-policies.js';
import type { ApiResult } from '../api/server.js';
import { openDatapath } from '../agent/datapath-agent.js';
import { NodeAgent } from '../agent/node-agent.js';
import { renderUi } from '../ui/page.js';
import { CpuProfiler } from './profiler.js';
import { releaseMemory } from './memory.js';
import { AuditCache } from '../audit/daemon-audit.js';
import type { AuditReport } from '../audit/findings.js';

/** How old the audit in a status report may be before a status request starts a new one in the background. */
const STATUS_AUDIT_MAX_AGE_MS = 60_000;

export interface DaemonOptions {
  configPath?: string;
  pinPath: string;
  /** extra policy sources (a Compose file) and platforms (Docker) plug in here */
  platform?: PlatformSource;
  extraPolicy?: () => Promise<PolicySet | undefined>;
  logLevel?: string;
}

/** A platform that reports endpoints as events (Docker, Kubernetes). */
export interface PlatformSource {
  name: string;
  start(onEvent: (ev: PlatformEvent) => void): Promise<void>;
  stop(): Promise<void>;
}

/** Discoveries in flight at once (each runs one `ip` in a container's namespace). */
const DISCOVERY_CONCURRENCY = 8;

export class ConfigRejected extends Error {
  constructor(readonly errors: string[]) {
    super(errors.join('\n'));
  }
}

export class Daemon {
  readonly log: Logger;
  readonly flows = new FlowStore();
  manager!: Manager;
  private server?: Server;
  private watcher?: FSWatcher;
  private reloadTimer?: NodeJS.Timeout;
  private hostTimer?: NodeJS.Timeout;
  private current?: LoadedConfig;
  private readonly startedAt = new Date();
  private closing = false;
  private readonly logDest: pino.DestinationStream & { flushSync(): void };
  readonly runtime: RuntimePolicies;
  /** the posture audit over this daemon's own state (GET /v1/audit, status) */
  readonly audits = new AuditCache(() => this.runAudit());

  constructor(readonly o: DaemonOptions) {
    // Asynchronous, buffered stdout: under a flood of flow lines (one per new
    // connection) lines are written 8 kB at a time instead of one write(2)
    // each, which was most of the daemon's CPU at 15,000 connections/s. A
    // quiet daemon's lines go out within 100 ms; everything is flushed on stop.
    this.logDest = pino.destination({ dest: 1, sync: false, minLength: 8192, periodicFlush: 100 });
    this.log = pino({ level: o.logLevel ?? 'info', base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, this.logDest);
    this.runtime = new RuntimePolicies(policiesFileFor(o.pinPath));
  }

  /** The config's rules, then the runtime policies' (in the order they were added). */
  private withRuntime(policy: PolicySet): PolicySet {
    return { mode: policy.mode, rules: [...policy.rules, ...this.runtime.rules()] };
  }

  /** Names that are both a config-file policy and a runtime policy. */
  private clashes(loaded: LoadedConfig): string[] {
    return loaded.policies.map((p) => p.name).filter((n) => this.runtime.get(n));
  }

  /** Validate everything first; apply only if all of it is good. */
  private async loadAll(): Promise<LoadedConfig> {
    const loaded = await loadConfigSource(this.o.configPath, { containersRequired: !this.o.platform });
    if (!loaded.ok) throw new ConfigRejected(loaded.errors);
    if (this.o.extraPolicy) {
      const extra = await this.o.extraPolicy();
      if (extra) loaded.policy = { mode: loaded.policy.mode, rules: [...loaded.policy.rules, ...extra.rules] };
    }
    return loaded;
  }

  private readonly node = new NodeAgent();
  /** BASTION_CPU_PROFILE=FILE: a V8 CPU profile of the running daemon (after start-up), written on stop */
  private readonly profiler = new CpuProfiler(process.env.BASTION_CPU_PROFILE);

  async start(): Promise<void> {
    const t0 = performance.now();
    const phases: Record<string, number> = {};
    const phase = (name: string) => (phases[name] = Math.round(performance.now() - t0));
    const first = await this.loadAll();
    phase('configMs');
    const node = this.node;
    // Discover every listed container before touching anything: an unknown
    // netns rejects the whole config.
    const found = await this.discoverAll(first.containers);
    phase('discoveredMs');

    const kept = this.runtime.load();
    if (kept.errors.length) this.log.error({ errors: kept.errors }, 'saved runtime policies not used');
    else if (kept.loaded) this.log.info({ policies: kept.loaded }, 'runtime policies of the previous run restored');
    const clash = this.clashes(first);
    if (clash.length) {
      this.log.warn({ policies: clash }, 'the config file now defines policies of these names: the file wins, the runtime ones are dropped');
      this.runtime.delete(clash);
      this.saveRuntime();
    }

    const datapath = await openDatapath(this.o.pinPath, this.log);
    this.manager = new Manager({ datapath, node, log: this.log });
    await this.manager.setHostAddresses(await node.hostAddresses());
    await this.manager.setPolicy(this.withRuntime(first.policy));
    phase('loadedMs');
    await this.manager.upsertEndpoints(first.containers.map((spec) => ({ spec, known: found.get(spec.key)! })));
    phase('enforcedMs');
    this.current = first;

    datapath.onEvent((ev) => {
      const rec = describeFlow(ev, {
        identityName: (id) => this.manager.identityName(id),
        ruleName: (n) => this.manager.rules.name(n),
        endpointName: (ifi) => this.manager.endpointByIfindex(ifi)?.name,
      });
      this.flows.push(rec);
      const { time, ...fields } = rec;
      this.log.info({ flowTime: time, ...fields }, 'flow');
    });

    if (this.o.platform) {
      await this.o.platform.start((ev) => void this.onPlatformEvent(ev));
    }
    // Whatever a previous run left that this one does not manage goes away.
    const pruned = await this.manager.pruneLeftovers();
    if (pruned.entries || pruned.stacks) this.log.info(pruned, 'removed leftovers of a previous run');

    const metrics = createMetrics(() => this.manager, () => datapath.counters(), this.flows);
    const socket = socketPathFor(this.o.pinPath);
    this.server = await startApiServer(socket, {
      status: () => this.status(),
      reload: () => this.reload(),
      policies: {
        list: () => this.listPolicies(),
        add: (text, source, opts) => this.addPolicies(text, source, opts),
        delete: (names) => this.deletePolicies(names),
      },
      metrics: () => metrics.registry.metrics(),
      metricsContentType: metrics.registry.contentType,
      flows: this.flows,
      ui: () => renderUi(),
      audit: (maxAgeMs) => this.audits.get(maxAgeMs),
    });
    mkdirSync(dirname(pidFileFor(this.o.pinPath)), { recursive: true });
    writeFileSync(pidFileFor(this.o.pinPath), `${process.pid}\n`);

    this.watchConfig();
    process.on('SIGHUP', () => void this.reload());
    this.hostTimer = setInterval(() => {
      void node.hostAddresses().then((a) => this.manager.setHostAddresses(a)).catch(() => undefined);
    }, 10_000);
    this.hostTimer.unref();

    await this.profiler.start();
    await this.warmUp(socket);
    const memory = await releaseMemory();
    this.log.info(
      {
        pinPath: this.o.pinPath,
        socket,
        mode: first.policy.mode,
        endpoints: this.manager.endpoints.size,
        rules: first.policy.rules.length,
        entries: this.manager.entryCounts(),
        startup: phases,
        memory,
      },
      'ready',
    );
  }

  /**
   * Discover containers, a few at a time (each is one `ip` process in the
   * container's namespace); any failure rejects the whole config.
   */
  private async discoverAll(specs: EndpointSpec[], listed: EndpointSpec[] = specs): Promise<Map<string, Discovered>> {
    const errors: string[] = [];
    const found = new Map<string, Discovered>();
    const limit = pLimit(DISCOVERY_CONCURRENCY);
    // errors name the container by its place in the file
    const index = new Map(listed.map((c, i) => [c.key, i]));
    await Promise.all(
      specs.map((s, i) =>
        limit(async () => {
          try {
            found.set(s.key, await this.node.discover(s));
          } catch (err) {
            errors.push(`${this.o.configPath ?? 'config'}: containers[${index.get(s.key) ?? i}] (${s.name}).netns: ${(err as Error).message}`);
          }
        }),
      ),
    );
    if (errors.length) throw new ConfigRejected(errors.sort());
    return found;
  }

  private watchConfig(): void {
    if (!this.o.configPath) return;
    const file = resolve(this.o.configPath);
    // Watch the directory: editors and `mv` replace the file, which would
    // silently end a watch on the file itself.
    this.watcher = watch(dirname(file), (_ev, name) => {
      if (name && name.toString() !== basename(file)) return;
      clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => void this.reload(), 50);
    });
  }

  /** Re-read the config; apply the difference, or reject it whole. */
  async reload(): Promise<{ ok: boolean; errors?: string[] }> {
    if (this.closing) return { ok: false, errors: ['daemon is stopping'] };
    try {
      const next = await this.loadAll();
      // Containers whose entry did not change are not looked at again:
      // a reload costs what changed, not the number of containers.
      const before = new Map((this.current?.containers ?? []).map((c) => [c.key, JSON.stringify(c)]));
      const changed = this.o.platform
        ? []
        : next.containers.filter((c) => !this.manager.endpoints.has(c.key) || before.get(c.key) !== JSON.stringify(c));
      const found = await this.discoverAll(changed, next.containers);
      const clash = this.clashes(next);
      if (clash.length) {
        throw new ConfigRejected(
          clash.map((n) => `${this.o.configPath}: policy "${n}" is also a runtime policy (bastion policy add); delete one of them first (bastion policy delete ${n})`),
        );
      }
      const t0 = performance.now();
      await this.manager.setPolicy(this.withRuntime(next.policy));
      if (!this.o.platform) {
        const keep = new Set(next.containers.map((c) => c.key));
        await this.manager.retainOnly(keep);
        await this.manager.upsertEndpoints(changed.map((spec) => ({ spec, known: found.get(spec.key)! })));
      }
      this.current = next;
      this.fileNames(); // the new file's names, before an API request needs them
      const ms = +(performance.now() - t0).toFixed(2);
      // a reload re-reads the whole file: its parse is the garbage of a peak
      const memory = await releaseMemory();
      this.log.info({ rules: next.policy.rules.length, endpoints: this.manager.endpoints.size, ms, rssMb: memory.rssMb }, 'config applied');
      return { ok: true };
    } catch (err) {
      const errors = err instanceof ConfigRejected ? err.errors : [(err as Error).message];
      this.log.error({ errors }, 'config rejected, previous config stays in force');
      for (const e of errors) process.stderr.write(`bastion: ${e}\n`);
      return { ok: false, errors };
    }
  }

  listPolicies(): PolicyRow[] {
    const rows: PolicyRow[] = (this.current?.policies ?? []).map((p) => policyRow(p, 'file'));
    for (const r of this.runtime.all()) rows.push(policyRow(r.policy, 'api', r.added));
    return rows;
  }

  /** Add or replace runtime policies from a policies document; all of it or nothing (or, dry run, only check it). */
  async addPolicies(text: string, source: string, opts: { dryRun?: boolean } = {}): Promise<ApiResult> {
    if (this.closing) return { code: 503, body: { ok: false, errors: ['daemon is stopping'] } };
    const parsed = parsePoliciesDocument(text, source);
    if (!parsed.ok) return { code: 422, body: { ok: false, errors: parsed.errors } };
    const fileNames = this.fileNames();
    const clash = parsed.policies.filter((p) => fileNames.has(p.name));
    if (clash.length) {
      return {
        code: 409,
        body: {
          ok: false,
          errors: clash.map((p) => `${source}: policy "${p.name}" is defined in the config file ${this.o.configPath}; change it there, or give this one another name`),
        },
      };
    }
    const t0 = performance.now();
    const actions = parsed.policies.map((p) => ({ name: p.name, action: this.runtime.get(p.name) ? 'replaced' : 'created' }));
    if (opts.dryRun) return { code: 200, body: { ok: true, dryRun: true, policies: actions } };
    const { added, removed } = this.runtime.set(parsed.policies);
    const stats = await this.manager.changeRules(added, removed);
    const ms = +(performance.now() - t0).toFixed(3);
    this.saveRuntime();
    this.log.info({ policies: actions, ops: stats.ops, ms }, 'policies applied');
    return { code: 200, body: { ok: true, policies: actions, entries: stats.ops, ms } };
  }

  async deletePolicies(names: string[]): Promise<ApiResult> {
    if (this.closing) return { code: 503, body: { ok: false, errors: ['daemon is stopping'] } };
    const fileNames = this.fileNames();
    const errors = names
      .filter((n) => !this.runtime.get(n))
      .map((n) => (fileNames.has(n) ? `policy "${n}" comes from the config file ${this.o.configPath}; remove it there` : `no runtime policy "${n}"`));
    // All of them or none: a name that is not a runtime policy deletes nothing.
    if (errors.length) return { code: names.some((n) => !this.runtime.get(n) && fileNames.has(n)) ? 409 : 404, body: { ok: false, errors } };
    const t0 = performance.now();
    const removed = this.runtime.delete(names);
    const stats = await this.manager.changeRules([], removed);
    const ms = +(performance.now() - t0).toFixed(3);
    this.saveRuntime();
    this.log.info({ policies: names, ops: stats.ops, ms }, 'policies deleted');
    return { code: 200, body: { ok: true, deleted: names, entries: stats.ops, ms } };
  }

  /**
   * The first `bastion policy add` should cost what the next ones do (it
   * took 10-25 ms instead of 4): build the index of the file's policy names
   * (50,000 at 5,000 containers) and send the API one dry-run request over
   * its own socket, so the request path and the validator are compiled
   * before a user's request waits on them.
   */
  private async warmUp(socket: string): Promise<void> {
    this.fileNames();
    const doc = JSON.stringify({ policies: [{ name: 'bastion-warm-up', from: { app: 'a' }, to: { app: 'b' }, ports: ['80/tcp'] }] });
    try {
      await apiCall(socket, 'POST', '/v1/policies?dryRun=1&source=warm-up', doc, 5000);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'API warm-up request failed');
    }
  }

  /** The config file's policy names, computed once per loaded config (50,000 at 5,000 containers). */
  private fileNames(): Set<string> {
    const c = this.current;
    if (!c) return new Set();
    let names = this.fileNamesCache.get(c);
    if (!names) this.fileNamesCache.set(c, (names = new Set(c.policies.map((p) => p.name))));
    return names;
  }
  private readonly fileNamesCache = new WeakMap<LoadedConfig, Set<string>>();

  private saveRuntime(): void {
    try {
      this.runtime.save();
    } catch (err) {
      // Enforcement is already in place; only a restart would forget it.
      this.log.error({ err: (err as Error).message }, 'could not save the runtime policies');
    }
  }

  private async onPlatformEvent(ev: PlatformEvent): Promise<void> {
    try {
      switch (ev.type) {
        case 'upsert': {
          const spec = { ...ev.spec, mode: ev.spec.mode ?? this.current?.defaultEndpointMode };
          await this.manager.upsertEndpoint(spec);
          break;
        }
        case 'remove':
          await this.manager.removeEndpoint(ev.key);
          break;
        case 'unprotected':
          this.manager.setUnprotected(ev.container);
          this.log.warn({ container: ev.container.name, reason: ev.container.reason }, 'container cannot be protected');
          break;
        case 'unprotected-gone':
          this.manager.clearUnprotected(ev.key);
          break;
        case 'port-guard':
          await this.manager.guardPort(ev.hostIfindex);
          break;
        case 'port-release':
          await this.manager.releasePort(ev.hostIfindex);
          break;
        case 'synced':
          await this.manager.retainOnly(new Set(ev.keys));
          break;
      }
    } catch (err) {
      this.log.error({ err: (err as Error).message, event: ev.type }, 'platform event failed');
    }
  }

  status(): Promise<StatusReport> {
    this.audits.refreshIfStale(STATUS_AUDIT_MAX_AGE_MS, (err) => this.log.warn({ err: err.message }, 'posture audit failed'));
    return collectStatus(this, this.startedAt, this.audits.peek());
  }

  /**
   * The posture audit (src/audit) over what this daemon holds: its endpoints
   * and their stacks, the containers it cannot protect, the policies of its
   * config file and runtime, and every rule it enforces (a Compose file's
   * too); the Docker engine and containers when it follows Docker.
   */
  private async runAudit(): Promise<AuditReport> {
    const { runAudit } = await import('../audit/audit.js');
    const m = this.manager;
    const dp = m.datapath;
    const configPath = this.o.configPath;
    return runAudit({
      docker: this.o.platform?.name === 'docker',
      pinPath: this.o.pinPath,
      daemon: {
        pinPath: this.o.pinPath,
        mode: m.mode,
        endpoints: [...m.endpoints.values()].map((ep) => ({ key: ep.key, name: ep.name, mode: ep.mode ?? m.mode, stackOk: dp.stackState(ep.hostIfindex).ok })),
        unprotected: [...m.unprotected.values()].map((u) => ({ key: u.key, name: u.name, reason: u.reason })),
      },
      policies: {
        mode: m.mode,
        policies: [
          ...(this.current?.policies ?? []).map((policy) => ({ policy, source: configPath ?? 'config' })),
          ...this.runtime.all().map((r) => ({ policy: r.policy, source: `${policiesFileFor(this.o.pinPath)} (bastion policy add)` })),
        ],
        rules: m.ruleList(),
      },
    });
  }

  get configPath(): string | undefined {
    return this.o.configPath;
  }
  get mode(): string {
    return this.manager.mode;
  }

  async stop(): Promise<void> {
    this.closing = true;
    clearTimeout(this.reloadTimer);
    clearInterval(this.hostTimer);
    this.watcher?.close();
    await this.o.platform?.stop().catch(() => undefined);
    await new Promise<void>((r) => {
      if (!this.server) return r();
      this.server.close(() => r());
      // followers of /v1/flows hold their connections open
      this.server.closeAllConnections();
    });
    // Close the ring buffer reader and the map fds: the pins and the tc
    // filters keep enforcing without us.
    this.manager?.datapath.close();
    for (const f of [socketPathFor(this.o.pinPath), pidFileFor(this.o.pinPath)]) rmSync(f, { force: true });
    await this.profiler.stop();
    this.log.info({}, 'stopped; enforcement stays in place');
    this.logDest.flushSync();
  }
}
