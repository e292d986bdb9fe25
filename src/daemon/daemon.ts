/**
 * `bastion run`: the composition root. It wires the config, the runtime
 * policies, the datapath, the manager, the platform, the API server, the
 * signals, the file watch and the timers; what each of them does lives in
 * its own module. When the daemon stops, for whatever reason, enforcement
 * stays: the programs stay attached and the maps pinned.
 */
import { existsSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import pino, { type Logger } from 'pino';
import { rehearsePolicyChanges } from '../manager/rehearsal.js';
import { Manager } from '../manager/manager.js';
import type { PlatformSource } from '../manager/endpoint.js';
import type { PolicySet } from '../policy/model.js';
import type { PublishedPortsMode } from '../policy/published.js';
import { FlowStore } from '../agent/flow-log.js';
import { openDatapath } from '../agent/datapath-agent.js';
import { HostAddressWatcher } from '../agent/host-addresses.js';
import type { DatapathLimits } from '../manager/slices.js';
import { NodeAgent } from '../agent/node-agent.js';
import { startApiServer } from '../api/server.js';
import { FlowFollowers } from '../api/flow-stream.js';
import { apiCall } from '../api/client.js';
import { flowHistoryDirFor, leaveFileFor, lockFileFor, modesFileFor, pidFileFor, policiesFileFor, socketPathFor } from '../api/paths.js';
import { acquireInstanceLock, type InstanceLock, writePidFile } from './instance.js';
import { PublishedPortPolicies } from './published-ports.js';
import { ConfigReloader } from './config-reloader.js';
import { watchConfigFile } from './config-watch.js';
import { RuntimePolicies } from './runtime-policies.js';
import { RuntimePolicyService } from './policy-service.js';
import { DEFAULT_VERIFY_INTERVAL_MS, DriftWatch } from './drift-watch.js';
import { logFlows, recordFlow, repairRecord, type FlowSinks } from './flow-logger.js';
import { FlowHistory, DEFAULT_HISTORY_MAX_BYTES } from '../flows/history.js';
import { ModeService } from './modes.js';
import { LearningService } from './learning-service.js';
import type { LoadedConfig } from './config-source.js';
import { platformEventHandler } from './platform-events.js';
import { collectStatus } from './status.js';
import { cachedGraphReport } from './graph-report.js';
import { succeed, type Outcome, type ReloadResult, type ShutdownResult, type StatusReport } from '../api/types.js';
import { createMetrics } from './metrics.js';
import { CpuProfiler } from './profiler.js';
import { releaseMemory, trimPeriodically } from './memory.js';
import { durableWritesDone } from './durable-file.js';
import { postureAudit } from './posture-audit.js';
import type { AuditCache } from '../audit/daemon-audit.js';
import { ClusterNode, type ClusterNodeOptions } from '../cluster/node.js';
import { LOCAL_ID_FLOOR } from '../cluster/keys.js';
import { DEFAULT_MIN_FREE_BYTES, youngCollector } from './young-generation.js';

export interface DaemonOptions {
  configPath?: string;
  pinPath: string;
  /** extra policy sources (a Compose file) and platforms (Docker) plug in here */
  platform?: PlatformSource;
  extraPolicy?: () => Promise<PolicySet | undefined>;
  logLevel?: string;
  /** how often maps and stacks are read back and drift repaired (ms; 0: only on request); default 5 s */
  verifyIntervalMs?: number;
  /**
   * The flow history on disk (default: on, under /var/lib/bastion/<pin-dir>/flows,
   * 256 MB at most); false: none (time-window queries, learn and verify
   * then see only the recent flows in memory)
   */
  flowHistory?: { dir?: string; maxBytes?: number } | false;
  /** largest config file accepted (bastion run --max-config-size) */
  maxConfigBytes?: number;
  /** what a published port lets in (bastion run --published-ports), default allow */
  publishedPorts?: PublishedPortsMode;
  /** the datapath's flood limits (flow events per second per container and reason, conntrack entries per container) */
  limits?: DatapathLimits;
  /** cluster mode: policies and other nodes' endpoints come from the cluster store */
  cluster?: Omit<ClusterNodeOptions, 'version'>;
}

/** How often expired conntrack entries are reclaimed (bpf/ct_gc.c: about 7 ms on a full table). */
const CT_COLLECT_INTERVAL_MS = 5000;
/** How old the audit in a status report may be before a status request starts a new one in the background. */
const STATUS_AUDIT_MAX_AGE_MS = 60_000;

export class Daemon {
  readonly log: Logger;
  readonly flows = new FlowStore();
  readonly followers = new FlowFollowers(this.flows);
  readonly config: ConfigReloader;
  readonly policies: RuntimePolicyService;
  readonly modes: ModeService;
  readonly history?: FlowHistory;
  readonly learning: LearningService;
  /** the config being applied at start-up, before the reloader holds it */
  private starting?: LoadedConfig;
  /** the posture audit over this daemon's own state (GET /v1/audit, status) */
  readonly audits: AuditCache;
  manager?: Manager;
  /** the periodic drift check */
  drift?: DriftWatch;
  /** published ports as policies (with a platform that publishes them) */
  readonly published?: PublishedPortPolicies;
  /** cluster mode: this node's membership (the store, remote endpoints, the tunnel) */
  cluster?: ClusterNode;
  private readonly node = new NodeAgent();
  private readonly startedAt = new Date();
  private readonly logDest: pino.DestinationStream & { flushSync(): void };
  /** BASTION_CPU_PROFILE=FILE: a V8 CPU profile of the running daemon (after start-up), written on stop; BASTION_CPU_PROFILE_INTERVAL_US: its sampling interval */
  private readonly profiler = new CpuProfiler(process.env.BASTION_CPU_PROFILE, Number(process.env.BASTION_CPU_PROFILE_INTERVAL_US) || undefined);
  /**
   * V8's young generation collected between changes (young-generation.ts);
   * BASTION_YOUNG_MIN_FREE_KB: what a change should find free (0: leave the
   * collections to V8, to measure what this is worth)
   */
  private readonly young = youngCollector(
    process.env.BASTION_YOUNG_MIN_FREE_KB === undefined ? DEFAULT_MIN_FREE_BYTES : Number(process.env.BASTION_YOUNG_MIN_FREE_KB) * 1024,
  );
  private server?: Server;
  private readonly cleanups: Array<() => void> = [];
  private lock?: InstanceLock;
  /** why a change of the config file is not applied yet (being written, no final newline) */
  private configPending?: string;
  private stopping?: Promise<void>;
  private stopRequested?: () => void;

  constructor(readonly o: DaemonOptions) {
    // Asynchronous, buffered stdout: under a flood of flow lines (one per new
    // connection) lines are written 8 kB at a time instead of one write(2)
    // each, which was most of the daemon's CPU at 15,000 connections/s. A
    // quiet daemon's lines go out within 100 ms; everything is flushed on stop.
    this.logDest = pino.destination({ dest: 1, sync: false, minLength: 8192, periodicFlush: 100 });
    this.log = pino({ level: o.logLevel ?? 'info', base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, this.logDest);
    const runtime = new RuntimePolicies(policiesFileFor(o.pinPath));
    this.published = o.platform ? new PublishedPortPolicies(o.publishedPorts ?? 'allow') : undefined;
    const published = this.published;
    this.config = new ConfigReloader({
      configPath: o.configPath,
      platform: !!o.platform,
      extraPolicy: o.extraPolicy,
      maxConfigBytes: o.maxConfigBytes,
      ...(published ? { platformRules: () => published.rules() } : {}),
      node: this.node,
      runtime,
      ...(o.cluster ? { clusterRules: () => this.cluster?.rules() ?? [] } : {}),
      log: this.log,
    });
    this.policies = new RuntimePolicyService(runtime, this.config, this.log, published ? () => published.rows() : undefined, o.cluster ? { rows: () => this.cluster?.policyRows() ?? [] } : undefined);
    this.modes = new ModeService(
      modesFileFor(o.pinPath),
      {
        globalMode: () => this.manager?.mode ?? (this.config.config ?? this.starting)?.policy.mode ?? 'enforce',
        filePolicies: () => (this.config.config ?? this.starting)?.policies ?? [],
        // in cluster mode the cluster's policies are the runtime ones (policies in audit mode included)
        runtimePolicies: () => (this.cluster ? this.cluster.policyConfigs() : runtime.all().map((p) => p.policy)),
      },
      this.log,
    );
    if (o.flowHistory !== false) {
      const dir = o.flowHistory?.dir ?? flowHistoryDirFor(o.pinPath);
      this.history = new FlowHistory({
        dir,
        maxBytes: o.flowHistory?.maxBytes ?? DEFAULT_HISTORY_MAX_BYTES,
        onError: (message) => this.log.warn({ err: message }, 'flow history'),
      });
    }
    this.learning = new LearningService(this.flows, this.history);
    this.audits = postureAudit({
      pinPath: o.pinPath,
      configPath: o.configPath,
      platform: o.platform?.name,
      runtimeFile: policiesFileFor(o.pinPath),
      manager: () => this.manager,
      filePolicies: () => this.config.config?.policies ?? [],
      runtime,
    });
  }

  async start(): Promise<void> {
    // One daemon per pin path, before anything is read or touched: a second
    // one fails here, naming the first (InstanceLocked), instead of taking
    // over its socket and pid file while it keeps running unseen.
    this.lock = acquireInstanceLock(lockFileFor(this.o.pinPath), this.o.pinPath, pidFileFor(this.o.pinPath));
    try {
      await this.startLocked();
    } catch (err) {
      // A cluster node refused at start-up (its name in use, a credential
      // that may not write its keys) holds the store's connection and its
      // timers: let them go, or the process would never exit with its error.
      await this.cluster?.close().catch(() => undefined);
      await this.history?.abandon().catch(() => undefined);
      this.lock.release();
      throw err;
    }
  }

  private async startLocked(): Promise<void> {
    const t0 = performance.now();
    const phases: Record<string, number> = {};
    const phase = (name: string) => (phases[name] = Math.round(performance.now() - t0));
    // Validate the config and discover every listed container before touching
    // anything: an unknown netns rejects the whole config.
    const config = await this.config.load();
    phase('configMs');
    const first = { config, found: await this.config.discover(config.containers) };
    phase('discoveredMs');
    this.policies.restore(first.config);
    this.starting = first.config;
    this.modes.load();
    await this.history?.open();
    phase('historyMs');

    const datapath = await openDatapath(this.o.pinPath, this.log);
    datapath.startConntrackCollector(CT_COLLECT_INTERVAL_MS, (err) => this.log.error({ err: err.message }, 'conntrack collector failed'));
    // Cluster mode: identities are the cluster's, local endpoints are
    // published, other nodes' endpoints and the policies come from the store.
    const cluster = this.o.cluster ? (this.cluster = await ClusterNode.open({ ...this.o.cluster, version: '0.1.0' }, this.log)) : undefined;
    // where every flow record goes besides the store: the history and the log
    const sinks: FlowSinks = { history: this.history, log: this.log, writeLogLine: (line) => this.logDest.write(line) };
    const manager = (this.manager = new Manager({
      datapath,
      node: this.node,
      log: this.log,
      limits: this.o.limits,
      modeOf: this.modes.modeOf,
      // every repair of drift or of a failed write is a flow record too
      // (`bastion flows --verdict REPAIRED`), kept in the history like the packets' ones
      onRepair: (r) => recordFlow(repairRecord(r, manager), this.flows, sinks),
      onIdle: () => this.young.idle(),
      ...(cluster ? { identities: cluster, observer: cluster, localIdentityFloor: LOCAL_ID_FLOOR, nodeName: cluster.o.node } : {}),
    }));
    this.modes.attach(manager);
    // the cluster's policies changed: the containers its policies in audit mode select change mode
    cluster?.onPoliciesApplied(() => this.modes.refresh({ policiesOnly: true }));
    await manager.setHostAddresses(await this.node.hostAddresses());
    if (cluster) {
      await cluster.start(manager, datapath);
      phase('clusterMs');
    }
    await this.config.applyFirst(manager, first);
    cluster?.beginPublishing();
    this.policies.attach(manager);
    this.starting = undefined;
    phase('enforcedMs');
    logFlows(datapath, manager, this.flows, sinks, cluster);

    if (this.o.platform) {
      const onEvent = platformEventHandler(manager, this.log, () => this.config.config?.defaultEndpointMode, this.published);
      await this.o.platform.start((ev) => void onEvent(ev));
    }
    // Whatever a previous run left that this one does not manage goes away.
    const pruned = await manager.pruneLeftovers();
    if (pruned.entries || pruned.stacks) this.log.info(pruned, 'removed leftovers of a previous run');
    const drift = (this.drift = new DriftWatch(manager, this.o.verifyIntervalMs ?? DEFAULT_VERIFY_INTERVAL_MS, this.log));
    drift.start();
    this.cleanups.push(() => drift.stop());

    const metrics = createMetrics(
      () => manager,
      () => datapath.counters(),
      this.flows,
      this.followers.stats,
      {
        modes: () => this.modes.list(),
        history: this.history?.stats,
        runtimePolicies: () => ({ ...this.policies.health(), saveFailures: this.policies.saveFailures }),
        config: () => ({ pending: this.configPending !== undefined, containersRemoved: this.config.containersRemoved }),
      },
      () => drift.last,
      cluster ? () => cluster.metrics() : undefined,
    );
    const socket = socketPathFor(this.o.pinPath);
    this.server = await startApiServer(socket, {
      status: () => this.status(),
      graph: cachedGraphReport(() => this.manager),
      reload: () => this.reload(),
      verify: async () => succeed(drift.note(await manager.verify('request'))),
      policies: {
        list: () => this.policies.list(),
        add: async (text, source, opts) => {
          const r = await this.policies.add(text, source, opts);
          if (r.ok && !opts.dryRun) await this.modes.refresh({ policiesOnly: true });
          return r;
        },
        delete: async (names) => {
          const r = await this.policies.delete(names);
          if (r.ok) await this.modes.refresh({ policiesOnly: true });
          return r;
        },
      },
      modes: {
        list: () => this.modes.list(),
        set: (name, mode) => this.modes.set(name, mode),
      },
      learning: this.learning,
      metrics: { text: () => metrics.registry.metrics(), contentType: metrics.registry.contentType },
      flows: this.flows,
      followers: this.followers,
      audit: (maxAgeMs) => this.audits.get(maxAgeMs),
      shutdown: () => this.shutdown(),
    });
    // who we are, so that `down` can tell this process from one that later gets its pid
    writePidFile(pidFileFor(this.o.pinPath), { pinPath: this.o.pinPath, ...(this.o.configPath ? { configPath: this.o.configPath } : {}) });

    if (this.o.configPath) {
      this.cleanups.push(
        watchConfigFile(this.o.configPath, {
          onComplete: () => void this.reload(),
          onPending: (why) => (this.configPending = why),
          // what the last reload (or start-up) read: a version written back after another was read is reloaded
          lastRead: () => this.config.lastReadDigest,
          log: this.log,
        }),
      );
    }
    const onHup = () => void this.reload();
    process.on('SIGHUP', onHup);
    this.cleanups.push(() => process.off('SIGHUP', onHup));
    // Every address the host takes as its own is the host's at once: the
    // watcher follows rtnetlink (a 10 s poll left a new address "world").
    const hostWatch = new HostAddressWatcher((a) => manager.setHostAddresses(a), { onError: (msg) => this.log.warn({}, msg) });
    await hostWatch.start();
    this.cleanups.push(() => hostWatch.stop());

    await this.profiler.start();
    await this.warmUp(socket);
    const memory = await releaseMemory();
    // and from now on, what malloc holds free between collections goes back every few seconds
    this.cleanups.push(trimPeriodically());
    this.log.info(
      {
        pinPath: this.o.pinPath,
        socket,
        mode: first.config.policy.mode,
        endpoints: manager.endpoints.size,
        rules: first.config.policy.rules.length,
        entries: manager.entryCounts(),
        startup: phases,
        memory,
      },
      'ready',
    );
  }

  /**
   * The first `bastion policy add` should cost what the next ones do (it
   * took 10-25 ms instead of 4): build the index of the file's policy names
   * (50,000 at 5,000 containers) and send the API one dry-run request over
   * its own socket, so the request path and the validator are compiled
   * before a user's request waits on them; and rehearse a change's
   * compile and diff on scratch state (src/manager/rehearsal.ts).
   */
  private async warmUp(socket: string): Promise<void> {
    this.config.fileNames();
    // the compile-and-diff path of a change, on scratch state (src/manager/rehearsal.ts)
    try {
      this.log.debug({ ms: +rehearsePolicyChanges().ms.toFixed(2) }, 'policy change rehearsed');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'policy change rehearsal failed');
    }
    if (this.cluster) return; // the policy API changes nothing in cluster mode
    const doc = JSON.stringify({ policies: [{ name: 'bastion-warm-up', from: { app: 'a' }, to: { app: 'b' }, ports: ['80/tcp'] }] });
    try {
      await apiCall(socket, 'POST', '/v1/policies?dryRun=1&source=warm-up', doc, 5000);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'API warm-up request failed');
    }
  }

  /** Re-read the config (file change, SIGHUP, POST /v1/reload); modes follow the policies. */
  async reload(): Promise<Outcome<ReloadResult>> {
    const r = await this.config.reload();
    if (r.ok) await this.modes.refresh();
    return r;
  }

  status(): StatusReport {
    this.audits.refreshIfStale(STATUS_AUDIT_MAX_AGE_MS, (err) => this.log.warn({ err: err.message }, 'posture audit failed'));
    return collectStatus({
      manager: this.manager!,
      pinPath: this.o.pinPath,
      configPath: this.o.configPath,
      startedAt: this.startedAt,
      flowsSeen: this.flows.count,
      audit: this.audits.peek(),
      checkIntervalMs: this.drift?.intervalMs ?? 0,
      modes: (ep) => this.modes.resolve(ep),
      history: this.history ? { dir: this.history.dir, ...this.history.stats } : undefined,
      runtimePolicies: this.policies.health(),
      ...(this.configPending ? { configPending: this.configPending } : {}),
      ...(this.published ? { published: this.published.status() } : {}),
      ...(this.cluster ? { cluster: this.cluster.status() } : {}),
    });
  }

  /** Resolves once SIGTERM, SIGINT or POST /v1/shutdown has stopped the daemon. */
  untilSignalled(): Promise<void> {
    return new Promise<void>((resolve) => {
      const stop = () => void this.stop().then(resolve);
      this.stopRequested = stop;
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
  }

  /** POST /v1/shutdown (what `bastion down` asks first): stop once the answer has left. */
  shutdown(): { outcome: Outcome<ShutdownResult>; stop(): void } {
    return { outcome: succeed({ pid: process.pid }), stop: () => (this.stopRequested ? this.stopRequested() : void this.stop()) };
  }

  stop(): Promise<void> {
    return (this.stopping ??= this.stopOnce());
  }

  private async stopOnce(): Promise<void> {
    this.config.close();
    this.policies.close();
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    await this.o.platform?.stop().catch(() => undefined);
    // A restart keeps the node's records until its lease runs out (other
    // nodes go on reaching its containers meanwhile); `bastion down` asks
    // for an orderly leave, and the records go at once.
    await this.cluster?.close({ leave: existsSync(leaveFileFor(this.o.pinPath)) }).catch(() => undefined);
    rmSync(leaveFileFor(this.o.pinPath), { force: true });
    await new Promise<void>((r) => {
      if (!this.server) return r();
      this.server.close(() => r());
      // followers of /v1/flows hold their connections open
      this.server.closeAllConnections();
    });
    // Close the ring buffer reader and the map fds: the pins and the tc
    // filters keep enforcing without us.
    // what the kernel counted since the last summary goes to the history before we go
    try {
      await this.manager?.datapath.summarizeFlows?.();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'last allowed-flow summary not read');
    }
    this.manager?.close();
    this.manager?.datapath.close();
    await this.history?.close();
    // a runtime policy or mode answered as saved is on disk before we go
    await durableWritesDone();
    for (const f of [socketPathFor(this.o.pinPath), pidFileFor(this.o.pinPath)]) rmSync(f, { force: true });
    await this.profiler.stop();
    this.log.info({}, 'stopped; enforcement stays in place');
    this.logDest.flushSync();
    this.lock?.release();
  }
}
