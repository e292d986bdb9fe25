/**
 * `bastion run`: the composition root. It wires the config, the runtime
 * policies, the datapath, the manager, the platform, the API server, the
 * signals, the file watch and the timers; what each of them does lives in
 * its own module. When the daemon stops, for whatever reason, enforcement
 * stays: the programs stay attached and the maps pinned.
 */
import { rmSync } from 'node:fs';
import type { Server } from 'node:http';
import pino, { type Logger } from 'pino';
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
import { lockFileFor, pidFileFor, policiesFileFor, socketPathFor } from '../api/paths.js';
import { acquireInstanceLock, type InstanceLock, writePidFile } from './instance.js';
import { PublishedPortPolicies } from './published-ports.js';
import { ConfigReloader } from './config-reloader.js';
import { watchConfigFile } from './config-watch.js';
import { RuntimePolicies } from './runtime-policies.js';
import { RuntimePolicyService } from './policy-service.js';
import { logFlows } from './flow-logger.js';
import { platformEventHandler } from './platform-events.js';
import { collectStatus } from './status.js';
import { cachedGraphReport } from './graph-report.js';
import { succeed, type Outcome, type ShutdownResult, type StatusReport } from '../api/types.js';
import { createMetrics } from './metrics.js';
import { CpuProfiler } from './profiler.js';
import { releaseMemory } from './memory.js';
import { postureAudit } from './posture-audit.js';
import type { AuditCache } from '../audit/daemon-audit.js';

export interface DaemonOptions {
  configPath?: string;
  pinPath: string;
  /** extra policy sources (a Compose file) and platforms (Docker) plug in here */
  platform?: PlatformSource;
  extraPolicy?: () => Promise<PolicySet | undefined>;
  logLevel?: string;
  /** largest config file accepted (bastion run --max-config-size) */
  maxConfigBytes?: number;
  /** what a published port lets in (bastion run --published-ports), default allow */
  publishedPorts?: PublishedPortsMode;
  /** the datapath's flood limits (flow events per second per container and reason, conntrack entries per container) */
  limits?: DatapathLimits;
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
  /** the posture audit over this daemon's own state (GET /v1/audit, status) */
  readonly audits: AuditCache;
  manager?: Manager;
  /** published ports as policies (with a platform that publishes them) */
  readonly published?: PublishedPortPolicies;
  private readonly node = new NodeAgent();
  private readonly startedAt = new Date();
  private readonly logDest: pino.DestinationStream & { flushSync(): void };
  /** BASTION_CPU_PROFILE=FILE: a V8 CPU profile of the running daemon (after start-up), written on stop */
  private readonly profiler = new CpuProfiler(process.env.BASTION_CPU_PROFILE);
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
      log: this.log,
    });
    this.policies = new RuntimePolicyService(runtime, this.config, this.log, published ? () => published.rows() : undefined);
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

    const datapath = await openDatapath(this.o.pinPath, this.log);
    datapath.startConntrackCollector(CT_COLLECT_INTERVAL_MS, (err) => this.log.error({ err: err.message }, 'conntrack collector failed'));
    const manager = (this.manager = new Manager({ datapath, node: this.node, log: this.log, limits: this.o.limits }));
    await manager.setHostAddresses(await this.node.hostAddresses());
    await this.config.applyFirst(manager, first);
    this.policies.attach(manager);
    phase('enforcedMs');
    logFlows(datapath, manager, this.flows, this.log);

    if (this.o.platform) {
      const onEvent = platformEventHandler(manager, this.log, () => this.config.config?.defaultEndpointMode, this.published);
      await this.o.platform.start((ev) => void onEvent(ev));
    }
    // Whatever a previous run left that this one does not manage goes away.
    const pruned = await manager.pruneLeftovers();
    if (pruned.entries || pruned.stacks) this.log.info(pruned, 'removed leftovers of a previous run');

    const metrics = createMetrics(() => manager, () => datapath.counters(), this.flows, this.followers.stats, {
      runtimePolicies: () => ({ ...this.policies.health(), saveFailures: this.policies.saveFailures }),
      config: () => ({ pending: this.configPending !== undefined, containersRemoved: this.config.containersRemoved }),
    });
    const socket = socketPathFor(this.o.pinPath);
    this.server = await startApiServer(socket, {
      status: () => this.status(),
      graph: cachedGraphReport(() => this.manager),
      reload: () => this.config.reload(),
      policies: this.policies,
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
          onComplete: () => void this.config.reload(),
          onPending: (why) => (this.configPending = why),
          log: this.log,
        }),
      );
    }
    const onHup = () => void this.config.reload();
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
   * before a user's request waits on them.
   */
  private async warmUp(socket: string): Promise<void> {
    this.config.fileNames();
    const doc = JSON.stringify({ policies: [{ name: 'bastion-warm-up', from: { app: 'a' }, to: { app: 'b' }, ports: ['80/tcp'] }] });
    try {
      await apiCall(socket, 'POST', '/v1/policies?dryRun=1&source=warm-up', doc, 5000);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'API warm-up request failed');
    }
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
      runtimePolicies: this.policies.health(),
      ...(this.configPending ? { configPending: this.configPending } : {}),
      ...(this.published ? { published: this.published.status() } : {}),
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
    this.lock?.release();
  }
}
