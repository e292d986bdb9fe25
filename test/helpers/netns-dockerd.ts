/**
 * A Docker engine of its own for a test "host": a real dockerd started in
 * that host's network namespace (nsenter --net, so the mount namespace,
 * cgroups and bpffs stay the machine's), with its own data root, exec root,
 * socket and containerd, under a directory named with the test's unique
 * prefix. Its containers' networks, bridges and iptables rules live in the
 * host's namespace, as on a real Docker host; the machine's own dockerd is
 * never touched. The test image is copied in from the machine's engine
 * (`docker save | docker load`: no registry here).
 *
 * stop() removes its containers, stops the engine (SIGTERM, then SIGKILL),
 * kills what it left (containerd, shims), unmounts what is still mounted
 * under its directory and removes the directory: run it in an after() hook.
 */
import { spawn, execFile } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { TEST_IMAGE, sleep } from './docker.js';

const exec = promisify(execFile);

const live = new Set<NetnsDockerd>();
process.once('exit', () => {
  // the runner is ending without the after() hook: at least no engine stays behind
  for (const d of live) d.killNow();
});

export class NetnsDockerd {
  readonly docker: Docker;
  private pid: number | undefined;

  private constructor(
    /** the host namespace it runs in */
    readonly netns: string,
    /** everything it writes is under here */
    readonly dir: string,
  ) {
    this.docker = new Docker({ socketPath: this.socket });
  }

  get socket(): string {
    return `${this.dir}/d.sock`;
  }

  /** DOCKER_HOST for a client of this engine (bastion run --docker reads it) */
  get host(): string {
    return `unix://${this.socket}`;
  }

  /**
   * Starts dockerd in `netns` (an existing named namespace) and loads the
   * test image. `dir` must be short (containerd's socket path under it is
   * limited to 108 bytes) and unique to the test.
   */
  static async start(netns: string, dir: string): Promise<NetnsDockerd> {
    const d = new NetnsDockerd(netns, dir);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(`${dir}/data`, { recursive: true });
    mkdirSync(`${dir}/x`, { recursive: true });
    const log = openSync(`${dir}/dockerd.log`, 'a');
    const child = spawn(
      'nsenter',
      [
        `--net=/run/netns/${netns}`, '--', 'dockerd',
        '--data-root', `${dir}/data`, '--exec-root', `${dir}/x`, '--pidfile', `${dir}/d.pid`,
        '-H', d.host,
        // no default docker0: only the networks the test creates
        '--bridge', 'none', '--ip6tables=false', '--log-level', 'warn',
      ],
      { stdio: ['ignore', log, log], detached: true },
    );
    closeSync(log);
    d.pid = child.pid;
    live.add(d);
    child.unref();
    try {
      const deadline = Date.now() + 60_000;
      for (;;) {
        try {
          await d.docker.ping();
          break;
        } catch (err) {
          if (child.exitCode !== null || Date.now() > deadline) throw new Error(`dockerd in ${netns} did not answer: ${(err as Error).message}\n${d.logTail()}`);
          await sleep(250);
        }
      }
      await exec('bash', ['-o', 'pipefail', '-c', `docker save ${TEST_IMAGE} | docker -H ${d.host} load -q`], { timeout: 120_000 });
      return d;
    } catch (err) {
      await d.stop();
      throw err;
    }
  }

  logTail(): string {
    try {
      return readFileSync(`${this.dir}/dockerd.log`, 'utf8').split('\n').slice(-15).join('\n');
    } catch {
      return '';
    }
  }

  /** Stops the engine and removes every trace of it; never throws. */
  async stop(): Promise<void> {
    if (this.pid !== undefined && alive(this.pid)) {
      try {
        const all = await this.docker.listContainers({ all: true });
        await Promise.all(all.map((c) => this.docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
        const nets = await this.docker.listNetworks();
        for (const n of nets) if (!['bridge', 'host', 'none'].includes(n.Name)) await this.docker.getNetwork(n.Id).remove().catch(() => undefined);
      } catch {
        // the engine is not answering: what it left is killed below
      }
      process.kill(this.pid, 'SIGTERM');
      const deadline = Date.now() + 20_000;
      while (alive(this.pid) && Date.now() < deadline) await sleep(100);
    }
    this.killNow();
    // overlay mounts of its containers (a clean stop has unmounted them), deepest first
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((m): m is string => !!m && m.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) await exec('umount', ['-l', m]).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  /** SIGKILL to the engine and to every process started from its directory (containerd, shims). */
  killNow(): void {
    if (this.pid !== undefined && alive(this.pid)) process.kill(this.pid, 'SIGKILL');
    for (const pid of processesMentioning(this.dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
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

/** pids whose command line names `dir` (containerd and its shims are started with paths under it) */
function processesMentioning(dir: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${dir}/`)) out.push(Number(p));
    } catch {
      // exited
    }
  }
  return out;
}
