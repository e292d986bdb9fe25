/**
 * The IPv4 addresses of the host (the agent's network namespace). Every one
 * of them maps to the HOST identity in the ipcache: a container reaching the
 * host through the gateway IP or any other host address is "host" traffic,
 * allowed only on the host ports its policy names.
 *
 * "Every address the host accepts as its own" is the kernel's local routing
 * table: its `local` routes (each interface address, 127.0.0.0/8) and its
 * `broadcast` routes (each subnet's directed broadcast, x.x.x.255 on a /24).
 * A datagram to a directed broadcast address with the gateway's MAC reaches
 * a host socket bound to 0.0.0.0 as surely as one to the gateway address:
 * taken for the world, it went through a world rule (issue 13). 0.0.0.0 is
 * added too (never a peer a container may address as "the world").
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ipJson } from './netns.js';

export interface HostAddress {
  address: string;
  prefixLen: number;
  ifname: string;
  ifindex: number;
  /** 'global', 'host' (loopback), 'link' */
  scope: string;
}

interface IpAddrEntry {
  ifindex: number;
  ifname: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
}

/** Every IPv4 address of the agent's namespace, loopback included, with its interface. */
export async function listHostAddressDetails(): Promise<HostAddress[]> {
  const links = await ipJson<IpAddrEntry>(['-4', 'addr', 'show']);
  const out: HostAddress[] = [];
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if (a.family !== 'inet') continue;
      out.push({ address: a.local, prefixLen: a.prefixlen, ifname: l.ifname, ifindex: l.ifindex, scope: a.scope ?? 'global' });
    }
  }
  return out;
}

/** Every IPv4 address of the host, deduplicated, in the order iproute2 lists them. */
export async function listHostAddresses(): Promise<string[]> {
  return [...new Set((await listHostAddressDetails()).map((a) => a.address))];
}

interface LocalRoute {
  type?: string;
  dst?: string;
}

/**
 * Every address the host delivers locally, from the local routing table:
 * addresses ("10.0.0.1"), and prefixes where the kernel routes a whole
 * prefix locally ("127.0.0.0/8"); broadcast addresses included; plus
 * 0.0.0.0. Sorted, deduplicated.
 */
export async function listHostLocalAddresses(): Promise<string[]> {
  const routes = await ipJson<LocalRoute>(['-4', 'route', 'show', 'table', 'local']);
  const out = new Set<string>(['0.0.0.0']);
  for (const r of routes) {
    if ((r.type === 'local' || r.type === 'broadcast') && r.dst) out.add(r.dst.endsWith('/32') ? r.dst.slice(0, -3) : r.dst);
  }
  return [...out].sort();
}

/**
 * Follows the host's addresses through rtnetlink: a long-running
 * `ip -o monitor address route` (RTMGRP_IPV4_IFADDR and _ROUTE) prints a
 * line for every address and route change, and each burst of lines leads to
 * one fresh read of the local table, handed to `onChange`. So a new host
 * address is the host's at once, not after a poll (it was "world" for up to
 * 10 s). The monitor is restarted if it dies; `resyncMs` re-reads anyway,
 * in case a change slipped between a read and a restart.
 */
export class HostAddressWatcher {
  private child?: ChildProcess;
  private stopped = false;
  private reading = false;
  private again = false;
  private timer?: NodeJS.Timeout;
  private restartTimer?: NodeJS.Timeout;

  constructor(
    private readonly onChange: (addrs: string[]) => void | Promise<void>,
    private readonly o: { ip?: string; resyncMs?: number; onError?: (msg: string) => void; read?: () => Promise<string[]> } = {},
  ) {}

  /** Starts the monitor and reads the addresses once; resolves after that first read. */
  async start(): Promise<void> {
    this.spawnMonitor();
    this.timer = setInterval(() => this.refresh(), this.o.resyncMs ?? 30_000);
    this.timer.unref();
    await this.read();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.restartTimer);
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }

  /** pid of the running monitor (tests) */
  get monitorPid(): number | undefined {
    return this.child?.pid;
  }

  /** A change was seen: read again (one read at a time; changes during a read cause one more). */
  refresh(): void {
    if (this.stopped) return;
    if (this.reading) {
      this.again = true;
      return;
    }
    void this.read();
  }

  private async read(): Promise<void> {
    this.reading = true;
    try {
      do {
        this.again = false;
        const addrs = await (this.o.read ?? listHostLocalAddresses)();
        if (!this.stopped) await this.onChange(addrs);
      } while (this.again && !this.stopped);
    } catch (err) {
      this.o.onError?.(`reading the host addresses failed: ${(err as Error).message}`);
    } finally {
      this.reading = false;
    }
  }

  private spawnMonitor(): void {
    if (this.stopped) return;
    const child = spawn(this.o.ip ?? 'ip', ['-o', '-4', 'monitor', 'address', 'route'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.once('error', (err) => this.o.onError?.(`cannot run ip monitor: ${err.message}`));
    createInterface({ input: child.stdout! }).on('line', () => this.refresh());
    child.once('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      if (this.stopped) return;
      this.o.onError?.(`ip monitor address route exited (${signal ?? code}); restarting it`);
      this.restartTimer = setTimeout(() => {
        this.spawnMonitor();
        this.refresh();
      }, 200);
    });
  }
}
