/**
 * BridgePortWatcher: reports the host-side veths enslaved to a set of Linux
 * bridges (Docker's docker0 and br-<id12>) the moment they are enslaved.
 *
 * Why: Docker creates a container's veth pair, enslaves the host side to the
 * bridge and moves the other side into the container's netns *before* it
 * starts the container's process, and reports `start` only after the process
 * runs. Measured here: veth enslaved ≈ 250-300 ms before the process starts,
 * carrier up ≈ 45 ms before it. An agent that attaches a default-drop stack
 * to every port this watcher reports closes the window in which a container
 * could send before its stack exists (see docs/docker.md).
 *
 * How: a long-running `ip -o monitor link` (rtnetlink RTMGRP_LINK, one line
 * per message), restarted if it dies, plus a full listing (`ip -j link show`)
 * at start, after every restart, when the bridge set changes and every
 * resyncIntervalMs, so nothing missed (netlink overruns, restarts) stays
 * missed. Each port is reported once ('added') until it leaves the bridge or
 * is deleted ('removed').
 */
import { EventEmitter } from 'node:events';
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';

const run = promisify(execFile);

/** Docker's bridges when not renamed by com.docker.network.bridge.name. */
export const DOCKER_BRIDGE_PATTERN = /^(docker0|br-[0-9a-f]{12})$/;

export interface BridgePort {
  ifindex: number;
  ifname: string;
  /** the bridge it is enslaved to */
  bridge: string;
  mac: string;
  /** carrier up (LOWER_UP): traffic can flow */
  up: boolean;
  /** when the watcher first saw it on the bridge (ms since the epoch) */
  seenAt: number;
}

export interface BridgePortWatcherOptions {
  /** bridge names, or a predicate on bridge names (default: DOCKER_BRIDGE_PATTERN) */
  bridges?: Iterable<string> | ((bridge: string) => boolean);
  /** the iproute2 `ip` binary (default "ip") */
  ipCommand?: string;
  /** full listing period in ms (default 5000; 0: only at start, restarts and bridge changes) */
  resyncIntervalMs?: number;
  /** delay before restarting a monitor that died (default 200 ms) */
  restartDelayMs?: number;
}

/** One rtnetlink link message as `ip -o monitor link` prints it. */
export interface LinkMessage {
  deleted: boolean;
  ifindex: number;
  ifname: string;
  flags: string[];
  master?: string;
  mac?: string;
}

const LINE = /^(Deleted )?(\d+): ([^\s:@]+)(?:@[^\s:]*)?: <([^>]*)>(.*)$/;

/** Parses one line of `ip -o monitor link` (undefined for anything else). */
export function parseMonitorLine(line: string): LinkMessage | undefined {
  const m = LINE.exec(line.replace(/^\[[^\]]*\]\s*/, '').trim());
  if (!m) return undefined;
  const rest = m[5] ?? '';
  const master = /\smaster (\S+)/.exec(rest)?.[1];
  const mac = /link\/ether ([0-9a-f]{2}(?::[0-9a-f]{2}){5})/i.exec(rest)?.[1]?.toLowerCase();
  return {
    deleted: Boolean(m[1]),
    ifindex: Number(m[2]),
    ifname: m[3]!,
    flags: (m[4] ?? '').split(',').filter(Boolean),
    ...(master ? { master } : {}),
    ...(mac ? { mac } : {}),
  };
}

/** Turns `ip -j link show` output into link messages. */
export function parseLinkList(json: string): LinkMessage[] {
  const raw = JSON.parse(json) as Array<{ ifindex: number; ifname: string; flags?: string[]; master?: string; address?: string }>;
  return raw.map((l) => ({
    deleted: false,
    ifindex: l.ifindex,
    ifname: l.ifname,
    flags: l.flags ?? [],
    ...(l.master ? { master: l.master } : {}),
    ...(l.address ? { mac: l.address.toLowerCase() } : {}),
  }));
}

/**
 * Events: 'added' (BridgePort), 'removed' (BridgePort), 'changed' (BridgePort:
 * carrier or name changed), 'warning' (string).
 */
export class BridgePortWatcher extends EventEmitter {
  private matcher: (bridge: string) => boolean;
  private readonly ip: string;
  private readonly resyncMs: number;
  private readonly restartMs: number;
  private readonly known = new Map<number, BridgePort>();
  private child?: ChildProcessByStdio<null, Readable, Readable>;
  private stopped = true;
  private timers = new Set<NodeJS.Timeout>();
  private interval?: NodeJS.Timeout;
  private listing: Promise<void> = Promise.resolve();
  /** bumped on every message; a listing only removes ports last touched before it began */
  private seq = 0;
  private readonly touched = new Map<number, number>();
  /** ifindexes seen deleted (the kernel does not reuse them soon); bounded */
  private readonly deleted = new Set<number>();

  constructor(o: BridgePortWatcherOptions = {}) {
    super();
    this.matcher = toMatcher(o.bridges);
    this.ip = o.ipCommand ?? 'ip';
    this.resyncMs = o.resyncIntervalMs ?? 5000;
    this.restartMs = o.restartDelayMs ?? 200;
  }

  /** Starts the monitor, then reports every port already on a watched bridge. */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    await this.spawnMonitor();
    await this.reconcile();
    // the monitor subscribes a few ms after exec: a second look closes that gap
    this.later(100, () => void this.reconcile());
    if (this.resyncMs > 0) {
      this.interval = setInterval(() => void this.reconcile(), this.resyncMs);
      this.interval.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.interval);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const c = this.child;
    this.child = undefined;
    if (c && c.exitCode === null) {
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGTERM');
      await exited;
    }
    await this.listing.catch(() => undefined);
  }

  /** Changes the watched bridges; ports of bridges no longer watched are reported removed. */
  setBridges(bridges: Iterable<string> | ((bridge: string) => boolean)): Promise<void> {
    this.matcher = toMatcher(bridges);
    for (const p of [...this.known.values()]) {
      if (!this.matcher(p.bridge)) {
        this.known.delete(p.ifindex);
        this.emit('removed', p);
      }
    }
    return this.stopped ? Promise.resolve() : this.reconcile();
  }

  /** The ports currently known, by ifindex. */
  ports(): BridgePort[] {
    return [...this.known.values()].sort((a, b) => a.ifindex - b.ifindex);
  }

  port(ifindex: number): BridgePort | undefined {
    return this.known.get(ifindex);
  }

  /** pid of the running `ip monitor` (for tests) */
  get monitorPid(): number | undefined {
    return this.child?.pid;
  }

  /** Lists every link now and reports the differences. */
  reconcile(): Promise<void> {
    const next = this.listing.then(async () => {
      if (this.stopped) return;
      const begun = this.seq;
      let out: string;
      try {
        ({ stdout: out } = await run(this.ip, ['-j', 'link', 'show'], { timeout: 10_000, maxBuffer: 64 << 20 }));
      } catch (err) {
        this.warn(`cannot list links: ${(err as Error).message}`);
        return;
      }
      if (this.stopped) return;
      const links = parseLinkList(out);
      const present = new Set<number>();
      for (const l of links) {
        // the monitor may have told of something newer while the listing ran
        if (this.deleted.has(l.ifindex) || (this.touched.get(l.ifindex) ?? -1) > begun) continue;
        if (l.master && this.matcher(l.master)) present.add(l.ifindex);
        this.handle(l);
      }
      for (const p of [...this.known.values()]) {
        if (!present.has(p.ifindex) && (this.touched.get(p.ifindex) ?? -1) <= begun) {
          this.known.delete(p.ifindex);
          this.emit('removed', p);
        }
      }
    });
    this.listing = next.catch(() => undefined);
    return next;
  }

  /** Applies one link message (exposed for tests). */
  handle(m: LinkMessage): void {
    this.touched.set(m.ifindex, ++this.seq);
    if (m.deleted) {
      this.deleted.add(m.ifindex);
      this.touched.delete(m.ifindex);
      if (this.deleted.size > 4096) this.deleted.delete(this.deleted.values().next().value as number);
    }
    if (this.touched.size > 65536) this.touched.clear();
    const cur = this.known.get(m.ifindex);
    const watched = !m.deleted && m.master !== undefined && this.matcher(m.master);
    if (!watched) {
      if (cur) {
        this.known.delete(m.ifindex);
        this.emit('removed', cur);
      }
      return;
    }
    const up = m.flags.includes('LOWER_UP');
    if (cur && cur.bridge !== m.master) {
      this.known.delete(m.ifindex);
      this.emit('removed', cur);
    } else if (cur) {
      const changed = cur.up !== up || cur.ifname !== m.ifname || (m.mac !== undefined && cur.mac !== m.mac);
      if (changed) {
        cur.up = up;
        cur.ifname = m.ifname;
        if (m.mac) cur.mac = m.mac;
        this.emit('changed', { ...cur });
      }
      return;
    }
    const port: BridgePort = { ifindex: m.ifindex, ifname: m.ifname, bridge: m.master!, mac: m.mac ?? '', up, seenAt: Date.now() };
    this.known.set(m.ifindex, port);
    this.emit('added', { ...port });
  }

  private spawnMonitor(): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      const child = spawn(this.ip, ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      let settled = false;
      const settle = () => {
        if (!settled) {
          settled = true;
          resolve();
        }
      };
      child.once('spawn', settle);
      child.once('error', (err) => {
        this.warn(`cannot run ${this.ip} monitor link: ${err.message}`);
        settle();
      });
      const rl = createInterface({ input: child.stdout });
      rl.on('line', (line) => {
        const m = parseMonitorLine(line);
        if (m) this.handle(m);
      });
      let errText = '';
      child.stderr.on('data', (d: Buffer) => (errText = (errText + d.toString()).slice(-2000)));
      child.once('exit', (code, signal) => {
        settle();
        if (this.child === child) this.child = undefined;
        if (this.stopped) return;
        this.warn(`ip monitor link exited (${signal ?? code})${errText ? `: ${errText.trim()}` : ''}; restarting it`);
        this.later(this.restartMs, () => {
          void this.spawnMonitor().then(() => this.reconcile());
        });
      });
    });
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) fn();
    }, ms);
    this.timers.add(t);
  }

  private warn(msg: string): void {
    if (this.listenerCount('warning')) this.emit('warning', msg);
  }
}

function toMatcher(b: Iterable<string> | ((bridge: string) => boolean) | undefined): (bridge: string) => boolean {
  if (b === undefined) return (n) => DOCKER_BRIDGE_PATTERN.test(n);
  if (typeof b === 'function') return b;
  const set = new Set(b);
  return (n) => set.has(n);
}
