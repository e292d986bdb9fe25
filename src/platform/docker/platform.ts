/**
 * The Docker platform adapter: follows a Docker engine through its API (unix
 * socket) and reports, as PlatformEvents, every interface of every running
 * container on a bridge network (one EndpointSpec each) and every container
 * Bastion cannot protect.
 *
 * - start: lists networks and running containers, reports them, then `synced`;
 * - then follows /events (container start/restart/die/stop/destroy/rename/
 *   update/pause/unpause, network create/destroy/connect/disconnect): each
 *   event re-inspects the container it names and reports the difference;
 * - when the engine goes away (restart, crash), it reconnects with backoff,
 *   resyncs from scratch (containers that died meanwhile are removed, those
 *   restarted with a new pid are upserted) and emits `synced` again.
 *
 * All work is serialised: for one container, events are reported in the
 * order Docker sent them, and the removals of a batch come before its
 * upserts (an IP that changes hands is released before it is reused).
 */
import { EventEmitter } from 'node:events';
import Docker from 'dockerode';
import type { EndpointSpec, PlatformEvent, UnprotectedContainer } from '../../manager/endpoint.js';
import {
  containerName,
  desiredForContainer,
  endpointKey,
  missingLinks,
  sameValue,
  toDockerNetwork,
  type ContainerDesired,
  type ContainerInspect,
  type DockerNetwork,
  type NetnsLink,
  type NetworkInfo,
} from './mapping.js';
import { listNetnsLinks } from './netns.js';
import { matches } from '../../policy/selector.js';
import type { LabelSelector } from '../../policy/model.js';

export interface DockerPlatformLogger {
  debug?(msg: string): void;
  info?(msg: string): void;
  warn?(msg: string): void;
}

export interface DockerPlatformOptions {
  /** default: $DOCKER_HOST when it is unix://..., else /var/run/docker.sock */
  socketPath?: string;
  /** a client to use instead of one on socketPath */
  docker?: Docker;
  /** manage only containers having all these labels */
  select?: Record<string, string>;
  /** reconnect backoff, doubling from initialMs up to maxMs (defaults 200, 5000) */
  backoff?: { initialMs?: number; maxMs?: number };
  /** start() fails when the first sync has not happened within this time (default 30000; 0: wait forever) */
  startTimeoutMs?: number;
  /** how the interfaces of a netns are listed (default nsenter + ip -j link) */
  listLinks?: (netnsPath: string) => Promise<NetnsLink[]>;
  log?: DockerPlatformLogger;
}

/** Who a host-side veth (by ifindex) belongs to, as far as this adapter knows. */
export type PortOwner =
  | { kind: 'endpoint'; key: string; containerId: string }
  | { kind: 'unprotected'; key: string; containerId: string; reason: string }
  /** a container outside `select`: Bastion leaves it alone */
  | { kind: 'unselected'; containerId: string; name: string };

interface ContainerState {
  desired: ContainerDesired;
  ports: Map<number, PortOwner>;
}

const EMPTY: ContainerDesired = { endpoints: [], unprotected: [] };

const CONTAINER_ACTIONS = new Set(['create', 'start', 'restart', 'die', 'stop', 'destroy', 'rename', 'update', 'pause', 'unpause']);
const NETWORK_ACTIONS = new Set(['create', 'destroy', 'connect', 'disconnect']);
const EVENT_FILTERS = {
  type: ['container', 'network'],
  event: [...new Set([...CONTAINER_ACTIONS, ...NETWORK_ACTIONS])],
};

/** How many times a container whose interfaces are not all visible yet is looked at again. */
const LINK_RETRIES = 10;

interface DockerEventMessage {
  Type?: string;
  Action?: string;
  status?: string;
  id?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

export function defaultDockerSocket(): string {
  const h = process.env.DOCKER_HOST;
  if (h && h.startsWith('unix://')) return h.slice('unix://'.length);
  return '/var/run/docker.sock';
}

/**
 * Events: 'event' (PlatformEvent); 'connected'; 'disconnected' (Error);
 * 'bridges' (string[]: the Linux bridges of Docker's bridge networks, when
 * they change); 'port' (hostIfindex, PortOwner | undefined); 'warning' (string).
 */
export class DockerPlatform extends EventEmitter {
  readonly name = 'docker';
  readonly socketPath: string;
  private readonly docker: Docker;
  /** `--select`: only containers with these labels (every container when empty) */
  private readonly select: LabelSelector;
  private readonly listLinks: (netnsPath: string) => Promise<NetnsLink[]>;
  private readonly log: DockerPlatformLogger;
  private readonly backoffInitial: number;
  private readonly backoffMax: number;
  private readonly startTimeoutMs: number;

  private readonly containers = new Map<string, ContainerState>();
  private readonly ports = new Map<number, PortOwner>();
  private networks = new Map<string, DockerNetwork>();
  private bridgeList: string[] = [];

  private chain: Promise<void> = Promise.resolve();
  private readonly pendingRefresh = new Set<string>();
  private readonly linkRetries = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private stream?: NodeJS.ReadableStream & { destroy?: () => void };
  private loop?: Promise<void>;
  private stopped = false;
  private isConnected = false;
  private wakeUp?: () => void;
  private syncCount = 0;

  constructor(o: DockerPlatformOptions = {}) {
    super();
    this.socketPath = o.socketPath ?? defaultDockerSocket();
    this.docker = o.docker ?? new Docker({ socketPath: this.socketPath });
    this.select = { matchLabels: { ...o.select } };
    this.listLinks = o.listLinks ?? listNetnsLinks;
    this.log = o.log ?? {};
    this.backoffInitial = o.backoff?.initialMs ?? 200;
    this.backoffMax = o.backoff?.maxMs ?? 5000;
    this.startTimeoutMs = o.startTimeoutMs ?? 30_000;
  }

  /**
   * Starts following the engine. Resolves once everything running has been
   * reported and `synced` emitted; rejects when that has not happened within
   * startTimeoutMs (the adapter is then stopped).
   */
  start(onEvent?: (ev: PlatformEvent) => void): Promise<void> {
    if (onEvent) this.on('event', onEvent);
    if (this.loop) return Promise.reject(new Error('DockerPlatform already started'));
    this.stopped = false;
    const firstSync = new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let lastError: Error | undefined;
      const onDisc = (err: Error) => (lastError = err);
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.off('event', onEv);
        this.off('disconnected', onDisc);
        this.off('stopped', onStopped);
        if (err) reject(err);
        else resolve();
      };
      const onEv = (ev: PlatformEvent) => {
        if (ev.type === 'synced') done();
      };
      const onStopped = () => done(new Error('the Docker adapter was stopped before its first sync'));
      this.on('event', onEv);
      this.on('disconnected', onDisc);
      this.on('stopped', onStopped);
      if (this.startTimeoutMs > 0) {
        timer = setTimeout(() => {
          done(
            new Error(
              `cannot reach the Docker engine at ${this.socketPath} within ${this.startTimeoutMs} ms` +
                (lastError ? `: ${lastError.message}` : '') +
                ' (is dockerd running? scripts/ensure-docker starts it)',
            ),
          );
          void this.stop();
        }, this.startTimeoutMs);
      }
    });
    this.loop = this.run();
    return firstSync;
  }

  /** Stops following the engine. Reports nothing more; what was reported stays as it is. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.closeStream();
    this.wakeUp?.();
    await this.loop?.catch(() => undefined);
    await this.chain.catch(() => undefined);
    this.loop = undefined;
  }

  /** The events from now on, as an async iterator (ends when the adapter stops). */
  events(): AsyncIterableIterator<PlatformEvent> {
    const buffered: PlatformEvent[] = [];
    let waiting: ((r: IteratorResult<PlatformEvent>) => void) | undefined;
    let done = false;
    const onEvent = (ev: PlatformEvent) => {
      if (waiting) {
        const w = waiting;
        waiting = undefined;
        w({ value: ev, done: false });
      } else buffered.push(ev);
    };
    const finish = () => {
      done = true;
      this.off('event', onEvent);
      this.off('stopped', finish);
      if (waiting) waiting({ value: undefined, done: true });
      waiting = undefined;
    };
    this.on('event', onEvent);
    this.on('stopped', finish);
    const it: AsyncIterableIterator<PlatformEvent> = {
      next: () => {
        const ev = buffered.shift();
        if (ev) return Promise.resolve({ value: ev, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => (waiting = r));
      },
      return: () => {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  get connected(): boolean {
    return this.isConnected;
  }

  /** How many times `synced` has been emitted. */
  get syncs(): number {
    return this.syncCount;
  }

  /** What has been reported and is in force now. */
  snapshot(): { endpoints: EndpointSpec[]; unprotected: UnprotectedContainer[] } {
    const endpoints: EndpointSpec[] = [];
    const unprotected: UnprotectedContainer[] = [];
    for (const c of this.containers.values()) {
      endpoints.push(...c.desired.endpoints);
      unprotected.push(...c.desired.unprotected);
    }
    endpoints.sort((a, b) => a.key.localeCompare(b.key));
    unprotected.sort((a, b) => a.key.localeCompare(b.key));
    return { endpoints, unprotected };
  }

  /** The Linux bridges of Docker's bridge networks (docker0, br-<id12>, custom names). */
  bridgeDevices(): string[] {
    return [...this.bridgeList];
  }

  /** Docker networks by name, as last listed. */
  dockerNetworks(): DockerNetwork[] {
    return [...this.networks.values()];
  }

  /** Who the host-side veth with this ifindex belongs to (undefined: unknown yet, or not a container's). */
  portOwner(hostIfindex: number): PortOwner | undefined {
    return this.ports.get(hostIfindex);
  }

  /** Re-list everything now (also done after every reconnection). */
  resync(): Promise<void> {
    return this.serial(() => this.doResync());
  }

  // ---------------------------------------------------------------- engine

  private async run(): Promise<void> {
    let delay = this.backoffInitial;
    while (!this.stopped) {
      let established = false;
      try {
        established = await this.session();
      } catch (err) {
        this.disconnected(err as Error);
      }
      if (this.stopped) break;
      if (established) delay = this.backoffInitial;
      await this.sleep(delay);
      delay = Math.min(delay * 2, this.backoffMax);
    }
    this.isConnected = false;
    this.emit('stopped');
  }

  /** One connection: open /events, resync, follow until the stream ends. Returns whether it got that far. */
  private async session(): Promise<boolean> {
    const stream = (await this.docker.getEvents({ filters: EVENT_FILTERS as never })) as NodeJS.ReadableStream & {
      destroy?: () => void;
    };
    if (this.stopped) {
      stream.destroy?.();
      return false;
    }
    this.stream = stream;
    let lastError: Error | undefined;
    const ended = new Promise<void>((resolve) => {
      stream.on('end', () => resolve());
      stream.on('close', () => resolve());
      stream.on('error', (err: Error) => {
        lastError = err;
        resolve();
      });
    });
    let buf = '';
    stream.on('data', (chunk: Buffer | string) => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        try {
          this.onDockerEvent(JSON.parse(line) as DockerEventMessage);
        } catch (err) {
          this.warn(`cannot parse a Docker event: ${(err as Error).message}`);
        }
      }
    });
    this.isConnected = true;
    this.emit('connected');
    this.info(`following the Docker engine at ${this.socketPath}`);
    // The event stream is open before anything is listed: nothing that
    // happens during the listing is missed (at worst it is looked at twice).
    await this.serial(() => this.doResync());
    await ended;
    this.stream = undefined;
    if (!this.stopped) this.disconnected(lastError ?? new Error('the Docker event stream ended (engine stopped or restarted)'));
    return true;
  }

  private disconnected(err: Error): void {
    const was = this.isConnected;
    this.isConnected = false;
    this.closeStream();
    if (this.stopped) return;
    if (was) this.warn(`lost the Docker engine: ${err.message}; reconnecting`);
    else this.debug(`cannot reach the Docker engine: ${err.message}`);
    this.emit('disconnected', err);
  }

  private closeStream(): void {
    const s = this.stream;
    this.stream = undefined;
    try {
      s?.destroy?.();
    } catch {
      // already closed
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.wakeUp = undefined;
        resolve();
      }, ms);
      this.timers.add(t);
      this.wakeUp = () => {
        clearTimeout(t);
        this.timers.delete(t);
        this.wakeUp = undefined;
        resolve();
      };
    });
  }

  private onDockerEvent(ev: DockerEventMessage): void {
    const action = ev.Action ?? ev.status ?? '';
    if (ev.Type === 'container' && CONTAINER_ACTIONS.has(action)) {
      const id = ev.Actor?.ID ?? ev.id;
      if (id) this.refreshLater(id);
    } else if (ev.Type === 'network' && NETWORK_ACTIONS.has(action)) {
      if (action === 'create' || action === 'destroy') void this.serial(() => this.loadNetworks());
      else {
        const id = ev.Actor?.Attributes?.container;
        if (id) this.refreshLater(id);
      }
    }
  }

  // ---------------------------------------------------------------- work

  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(async () => {
      if (this.stopped) return;
      try {
        await fn();
      } catch (err) {
        this.warn(`docker: ${(err as Error).message}`);
      }
    });
    this.chain = p;
    return p;
  }

  private refreshLater(id: string): void {
    if (this.pendingRefresh.has(id)) return;
    this.pendingRefresh.add(id);
    void this.serial(async () => {
      this.pendingRefresh.delete(id);
      await this.refresh(id);
    });
  }

  private async refresh(id: string): Promise<void> {
    const info = await this.inspect(id);
    const desired = info ? await this.compute(info) : { desired: EMPTY, ports: new Map<number, PortOwner>() };
    this.apply([[info?.Id ?? this.knownId(id), desired]]);
  }

  private knownId(idOrName: string): string {
    for (const id of this.containers.keys()) if (id.startsWith(idOrName)) return id;
    return idOrName;
  }

  private async doResync(): Promise<void> {
    await this.loadNetworks();
    const list = await this.docker.listContainers();
    const running = new Set(list.map((c) => c.Id));
    const changes: Array<[string, ContainerState]> = [];
    for (const id of this.containers.keys()) {
      if (!running.has(id)) changes.push([id, { desired: EMPTY, ports: new Map() }]);
    }
    const ids = [...running];
    for (let i = 0; i < ids.length; i += 8) {
      const batch = await Promise.all(
        ids.slice(i, i + 8).map(async (id): Promise<[string, ContainerState]> => {
          const info = await this.inspect(id);
          return [id, info ? await this.compute(info) : { desired: EMPTY, ports: new Map() }];
        }),
      );
      changes.push(...batch);
    }
    this.apply(changes);
    const keys: string[] = [];
    for (const c of this.containers.values()) {
      for (const e of c.desired.endpoints) keys.push(e.key);
      for (const u of c.desired.unprotected) keys.push(u.key);
    }
    keys.sort();
    this.syncCount++;
    this.emitEvent({ type: 'synced', keys });
  }

  private async inspect(id: string): Promise<ContainerInspect | undefined> {
    try {
      return (await this.docker.getContainer(id).inspect()) as unknown as ContainerInspect;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
  }

  private async loadNetworks(): Promise<void> {
    const nets = (await this.docker.listNetworks()) as unknown as NetworkInfo[];
    const next = new Map<string, DockerNetwork>();
    for (const n of nets) next.set(n.Name, toDockerNetwork(n));
    this.networks = next;
    const bridges = [...new Set([...next.values()].flatMap((n) => (n.bridge ? [n.bridge] : [])))].sort();
    if (!sameValue(bridges, this.bridgeList)) {
      this.bridgeList = bridges;
      this.emit('bridges', [...bridges]);
    }
  }

  /** What one container should look like now (reads its netns). */
  private async compute(info: ContainerInspect): Promise<ContainerState> {
    const ports = new Map<number, PortOwner>();
    if (!info.State.Running || !info.State.Pid) return { desired: EMPTY, ports };
    const netNames = Object.keys(info.NetworkSettings.Networks ?? {});
    if (netNames.some((n) => !this.networks.has(n) && n !== 'none' && n !== 'host')) await this.loadNetworks();
    const onBridge = netNames.some((n) => this.networks.get(n)?.driver === 'bridge');
    const selected = matches(this.select, info.Config.Labels ?? {});

    let links: NetnsLink[] | undefined;
    if (onBridge) {
      try {
        links = await this.listLinks(`/proc/${info.State.Pid}/ns/net`);
      } catch (err) {
        // the process may have just exited: look again, Docker has the last word
        const again = await this.inspect(info.Id);
        if (!again || !again.State.Running || again.State.Pid !== info.State.Pid) {
          return again ? this.compute(again) : { desired: EMPTY, ports };
        }
        throw new Error(`cannot list the interfaces of container ${containerName(info)}: ${(err as Error).message}`);
      }
    }

    if (!selected) {
      const name = containerName(info);
      for (const l of links ?? []) if (l.peerIfindex !== undefined) ports.set(l.peerIfindex, { kind: 'unselected', containerId: info.Id, name });
      return { desired: EMPTY, ports };
    }

    const desired = desiredForContainer(info, { networks: this.networks, links });
    const missing = onBridge && desired.endpoints.length ? missingLinks(info, { networks: this.networks, links }) : [];
    if (missing.length) {
      const tries = (this.linkRetries.get(info.Id) ?? 0) + 1;
      if (tries <= LINK_RETRIES) {
        this.linkRetries.set(info.Id, tries);
        // report the endpoints whose interface is known; look again shortly for the rest
        desired.endpoints = desired.endpoints.filter((e) => !missing.some((m) => e.key === endpointKey(info.Id, m)));
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.refreshLater(info.Id);
        }, 50 * tries);
        this.timers.add(t);
      } else {
        this.linkRetries.delete(info.Id);
        this.warn(`container ${containerName(info)}: no interface with the MAC address of network(s) ${missing.join(', ')}; assuming eth0`);
      }
    } else this.linkRetries.delete(info.Id);

    for (const e of desired.endpoints) {
      if (e.hostIfindex !== undefined) ports.set(e.hostIfindex, { kind: 'endpoint', key: e.key, containerId: info.Id });
    }
    const whole = desired.unprotected.find((u) => u.key === endpointKey(info.Id));
    if (whole) {
      for (const l of links ?? []) {
        if (l.peerIfindex !== undefined) ports.set(l.peerIfindex, { kind: 'unprotected', key: whole.key, containerId: info.Id, reason: whole.reason });
      }
    }
    return { desired, ports };
  }

  /** Reports the difference between what was reported and `changes`: removals first, then upserts. */
  private apply(changes: Array<[string, ContainerState]>): void {
    const removals: PlatformEvent[] = [];
    const upserts: PlatformEvent[] = [];
    const portChanges: Array<[number, PortOwner | undefined]> = [];
    for (const [id, next] of changes) {
      const cur = this.containers.get(id)?.desired ?? EMPTY;
      const nextEp = new Map(next.desired.endpoints.map((e) => [e.key, e]));
      const nextUn = new Map(next.desired.unprotected.map((u) => [u.key, u]));
      for (const e of cur.endpoints) if (!nextEp.has(e.key)) removals.push({ type: 'remove', key: e.key });
      for (const u of cur.unprotected) if (!nextUn.has(u.key)) removals.push({ type: 'unprotected-gone', key: u.key });
      const curEp = new Map(cur.endpoints.map((e) => [e.key, e]));
      const curUn = new Map(cur.unprotected.map((u) => [u.key, u]));
      for (const e of next.desired.endpoints) {
        const before = curEp.get(e.key);
        if (!before || !sameValue(before, e)) upserts.push({ type: 'upsert', spec: e });
      }
      for (const u of next.desired.unprotected) {
        const before = curUn.get(u.key);
        if (!before || !sameValue(before, u)) upserts.push({ type: 'unprotected', container: u });
      }
      const curPorts = this.containers.get(id)?.ports ?? new Map<number, PortOwner>();
      for (const [ifi] of curPorts) if (!next.ports.has(ifi)) portChanges.push([ifi, undefined]);
      for (const [ifi, owner] of next.ports) if (!sameValue(curPorts.get(ifi), owner)) portChanges.push([ifi, owner]);

      if (next.desired.endpoints.length || next.desired.unprotected.length || next.ports.size) this.containers.set(id, next);
      else this.containers.delete(id);
    }
    for (const [ifi, owner] of portChanges) {
      if (owner) this.ports.set(ifi, owner);
      else if (![...this.containers.values()].some((c) => c.ports.has(ifi))) this.ports.delete(ifi);
    }
    for (const ev of removals) this.emitEvent(ev);
    for (const ev of upserts) this.emitEvent(ev);
    for (const [ifi, owner] of portChanges) this.emit('port', ifi, owner);
  }

  private emitEvent(ev: PlatformEvent): void {
    this.debug(`event ${ev.type} ${'key' in ev ? ev.key : ev.type === 'upsert' ? ev.spec.key : ev.type === 'unprotected' ? ev.container.key : ''}`);
    try {
      this.emit('event', ev);
    } catch (err) {
      this.warn(`an event listener failed: ${(err as Error).message}`);
    }
  }

  private warn(msg: string): void {
    this.log.warn?.(msg);
    if (this.listenerCount('warning')) this.emit('warning', msg);
  }
  private info(msg: string): void {
    this.log.info?.(msg);
  }
  private debug(msg: string): void {
    this.log.debug?.(msg);
  }
}
