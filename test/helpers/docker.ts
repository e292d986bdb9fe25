/**
 * Test helpers for a real Docker engine: make sure it runs, create uniquely
 * named containers and networks and remove exactly those afterwards,
 * restart dockerd, wait for conditions.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';

const run = promisify(execFile);

/** Repository root (this file is compiled to dist/test/helpers). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const TEST_IMAGE = 'bastion/busybox:latest';
export const TEST_LABEL = 'bastion.test';

export type EngineCheck = { ok: true; docker: Docker } | { ok: false; reason: string };

/**
 * Makes sure dockerd runs and the test image exists (scripts/ensure-docker,
 * which the test command also runs first). Returns why not when Docker
 * really cannot run here.
 */
export async function ensureEngine(): Promise<EngineCheck> {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (starts dockerd, enters network namespaces)' };
  try {
    await run('bash', [join(ROOT, 'scripts/ensure-docker')], { timeout: 300_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return { ok: false, reason: `scripts/ensure-docker failed: ${(e.stderr || e.message).trim().split('\n').slice(-5).join(' | ')}` };
  }
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  try {
    await docker.ping();
    await docker.getImage(TEST_IMAGE).inspect();
  } catch (err) {
    return { ok: false, reason: `the Docker engine does not answer after scripts/ensure-docker: ${(err as Error).message}` };
  }
  return { ok: true, docker };
}

/** Stops dockerd (SIGTERM, then SIGKILL after graceMs) and starts it again with scripts/ensure-docker. */
export async function restartDockerd(o: { signal?: NodeJS.Signals; graceMs?: number; beforeStart?: () => Promise<void> } = {}): Promise<void> {
  const pid = dockerdPid();
  if (pid) {
    process.kill(pid, o.signal ?? 'SIGTERM');
    const deadline = Date.now() + (o.graceMs ?? 30_000);
    while (alive(pid) && Date.now() < deadline) await sleep(100);
    if (alive(pid)) {
      process.kill(pid, 'SIGKILL');
      while (alive(pid)) await sleep(50);
    }
  }
  await o.beforeStart?.();
  await run('bash', [join(ROOT, 'scripts/ensure-docker')], { timeout: 300_000, env: { ...process.env, BASTION_SKIP_IMAGES: '1' } });
}

export function dockerdPid(): number | undefined {
  try {
    const pid = Number(readFileSync('/var/run/docker.pid', 'utf8').trim());
    return pid > 0 && alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns something truthy; fails naming `what` after timeoutMs. */
export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await sleep(50);
  }
}

export interface RunOptions {
  name: string;
  cmd?: string[];
  labels?: Record<string, string>;
  network?: string;
  ipv4?: string;
  hostConfig?: Docker.HostConfig;
  /** ports the image exposes ("80/tcp"), for PortBindings */
  exposedPorts?: string[];
  start?: boolean;
}

/**
 * Containers and networks of one test file: every name starts with a unique
 * prefix and carries the label bastion.test=<prefix>; cleanup() removes
 * exactly those (and nothing else), whatever state they are in.
 */
export class DockerFixture {
  readonly prefix = `bt${randomBytes(3).toString('hex')}`;
  private readonly containers = new Set<string>();
  private readonly networks = new Set<string>();

  constructor(readonly docker: Docker) {}

  name(n: string): string {
    return `${this.prefix}-${n}`;
  }

  get label(): Record<string, string> {
    return { [TEST_LABEL]: this.prefix };
  }

  async createNetwork(n: string, opts: Partial<Docker.NetworkCreateOptions> = {}): Promise<Docker.NetworkInspectInfo> {
    const net = await this.docker.createNetwork({ Name: this.name(n), Driver: 'bridge', CheckDuplicate: true, Labels: this.label, ...opts });
    this.networks.add(net.id);
    return (await net.inspect()) as Docker.NetworkInspectInfo;
  }

  async run(o: RunOptions): Promise<Docker.ContainerInspectInfo> {
    const c = await this.docker.createContainer({
      name: this.name(o.name),
      Image: TEST_IMAGE,
      Cmd: o.cmd ?? ['sleep', '3600'],
      Labels: { ...this.label, ...(o.labels ?? {}) },
      StopTimeout: 1,
      ...(o.exposedPorts ? { ExposedPorts: Object.fromEntries(o.exposedPorts.map((p) => [p, {}])) } : {}),
      HostConfig: { ...(o.network ? { NetworkMode: o.network } : {}), ...(o.hostConfig ?? {}) },
      ...(o.network && o.ipv4 ? { NetworkingConfig: { EndpointsConfig: { [o.network]: { IPAMConfig: { IPv4Address: o.ipv4 } } } } } : {}),
    });
    this.containers.add(c.id);
    if (o.start !== false) await c.start();
    return c.inspect();
  }

  inspect(id: string): Promise<Docker.ContainerInspectInfo> {
    return this.docker.getContainer(id).inspect();
  }

  /** Removes every container and network this fixture created; never throws. */
  async cleanup(): Promise<string[]> {
    const problems: string[] = [];
    // also whatever carries our label, should an id have been lost
    try {
      const mine = await this.docker.listContainers({ all: true, filters: { label: [`${TEST_LABEL}=${this.prefix}`] } });
      for (const c of mine) this.containers.add(c.Id);
    } catch {
      // engine down: try the ids we know
    }
    await Promise.all(
      [...this.containers].map(async (id) => {
        try {
          await this.docker.getContainer(id).remove({ force: true, v: true });
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode !== 404) problems.push(`container ${id.slice(0, 12)}: ${(err as Error).message}`);
        }
      }),
    );
    try {
      const mine = await this.docker.listNetworks({ filters: { label: [`${TEST_LABEL}=${this.prefix}`] } });
      for (const n of mine) this.networks.add(n.Id);
    } catch {
      // as above
    }
    for (const id of this.networks) {
      try {
        await this.docker.getNetwork(id).remove();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) problems.push(`network ${id.slice(0, 12)}: ${(err as Error).message}`);
      }
    }
    return problems;
  }
}

/** Runs a command inside a container's network namespace (host tools, e.g. arping). */
export async function inNetns(pid: number, cmd: string[], timeoutMs = 10_000): Promise<string> {
  const { stdout } = await run('nsenter', [`--net=/proc/${pid}/ns/net`, ...cmd], { timeout: timeoutMs });
  return stdout;
}
