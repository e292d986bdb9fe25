/**
 * Network probes for the end-to-end tests, run inside a container's network
 * namespace (or the host's, with ns = null) with ordinary tools: nc, socat,
 * arping, nmap, tcpdump, ip. Every probe is bounded in time, and every
 * background process (listeners, captures) is started in its own process
 * group, recorded, and killed by stopBackground() (tests call it in after();
 * it also runs on process exit).
 *
 * The probes return what they observed rather than asserting, so a test can
 * first show a probe succeeding (without Bastion, or on an allowed path) and
 * only then trust the same probe's failure to mean "blocked".
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';

/** A network namespace name under /run/netns, or null for the host namespace. */
export type Ns = string | null;

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

/**
 * The argv that runs cmd in the namespace. setpriv gives the command a
 * parent-death signal: if the test runner itself dies (SIGKILL, a closed
 * pipe), its listeners and captures die with it instead of lingering.
 */
export function nsArgv(ns: Ns, cmd: string, args: string[]): [string, string[]] {
  const guarded = ['--pdeathsig', 'KILL', cmd, ...args];
  return ns === null ? ['setpriv', guarded] : ['ip', ['netns', 'exec', ns, 'setpriv', ...guarded]];
}

// ------------------------------------------------------- background processes

const background = new Set<ChildProcess>();
let exitHook = false;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* gone */
    }
  }
}

function track(child: ChildProcess): void {
  background.add(child);
  child.once('exit', () => background.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const c of background) killGroup(c, 'SIGKILL');
    });
  }
}

/** Kills every background process the probes started (listeners, captures, transfers). */
export async function stopBackground(): Promise<void> {
  const all = [...background];
  await Promise.all(all.map((c) => stopChild(c, 'SIGKILL', 2000)));
}

/** Signals a child's process group and waits (bounded) for it to exit. */
export function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 2000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t1);
      clearTimeout(t2);
      resolve();
    };
    child.once('exit', done);
    killGroup(child, signal);
    const t1 = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
    const t2 = setTimeout(done, graceMs + 2000);
  });
}

/** Starts a long-running command in its own process group; stdout/stderr are collected. */
export function startBackground(ns: Ns, cmd: string, args: string[]): Background {
  const [c, a] = nsArgv(ns, cmd, args);
  const child = spawn(c, a, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  track(child);
  return new Background(child, `${cmd} ${args.join(' ')}`);
}

export class Background {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  constructor(
    readonly child: ChildProcess,
    readonly what: string,
  ) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    child.stdin!.on('error', () => undefined);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (err) => {
        this.stderr += String(err);
        resolve({ code: -1, signal: null });
      });
    });
  }
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await stopChild(this.child, signal);
  }
}

// ----------------------------------------------------------- one-shot commands

/**
 * Runs a command (in a namespace) to completion, bounded by timeoutMs: on
 * timeout its process group is killed and timedOut is set. Never rejects.
 */
export function nsRun(ns: Ns, cmd: string, args: string[], opts: { timeoutMs?: number; input?: string | Buffer } = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const [c, a] = nsArgv(ns, cmd, args);
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(c, a, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    track(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin!.on('error', () => undefined);
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, signal: null, stdout, stderr: stderr + String(err), timedOut, ms: Date.now() - t0 });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, ms: Date.now() - t0 });
    });
    child.stdin!.end(opts.input ?? '');
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every intervalMs until it returns true or timeoutMs passes; returns the last result. */
export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= end) return false;
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------- listeners

/** Is something listening on ip:port/proto in that namespace? */
export async function isListening(ns: Ns, proto: 'tcp' | 'udp', ip: string, port: number): Promise<boolean> {
  const r = await nsRun(ns, 'ss', ['-H', '-n', proto === 'tcp' ? '-lt' : '-lu', `sport = :${port}`], { timeoutMs: 3000 });
  return r.code === 0 && r.stdout.split('\n').some((l) => l.includes(`${ip}:${port}`));
}

/**
 * A TCP echo server bound to ip:port (socat, one child per connection, `cat`
 * echoes every byte back). Resolves once it is listening.
 */
export async function startTcpEcho(ns: Ns, ip: string, port: number): Promise<Background> {
  const bg = startBackground(ns, 'socat', [`TCP4-LISTEN:${port},bind=${ip},reuseaddr,fork`, 'EXEC:cat']);
  if (!(await waitFor(() => isListening(ns, 'tcp', ip, port), 5000))) {
    await bg.stop('SIGKILL');
    throw new Error(`tcp echo on ${ns ?? 'host'} ${ip}:${port} did not start: ${bg.stderr}`);
  }
  return bg;
}

/** A UDP echo server bound to ip:port. Resolves once it is bound. */
export async function startUdpEcho(ns: Ns, ip: string, port: number): Promise<Background> {
  const bg = startBackground(ns, 'socat', [`UDP4-RECVFROM:${port},bind=${ip},reuseaddr,fork`, 'EXEC:cat']);
  if (!(await waitFor(() => isListening(ns, 'udp', ip, port), 5000))) {
    await bg.stop('SIGKILL');
    throw new Error(`udp echo on ${ns ?? 'host'} ${ip}:${port} did not start: ${bg.stderr}`);
  }
  return bg;
}

// ------------------------------------------------------------------- probes

export interface ConnectResult {
  /** the TCP handshake completed */
  ok: boolean;
  /** the peer answered with a reset (something listened for the SYN's address but not the port) */
  refused: boolean;
  /** no answer at all within the timeout (dropped) */
  timedOut: boolean;
  ms: number;
  detail: string;
}

/** A TCP connection attempt (nc -z), bounded by timeoutS. */
export async function tcpConnect(ns: Ns, ip: string, port: number, timeoutS = 2): Promise<ConnectResult> {
  const r = await nsRun(ns, 'nc', ['-z', '-n', '-v', '-w', String(timeoutS), ip, String(port)], { timeoutMs: (timeoutS + 3) * 1000 });
  const out = `${r.stdout}${r.stderr}`.trim();
  const refused = /refused/i.test(out);
  return {
    ok: r.code === 0,
    refused,
    timedOut: r.code !== 0 && !refused,
    ms: r.ms,
    detail: `nc -z ${ip} ${port} from ${ns ?? 'host'}: exit ${r.code}${r.timedOut ? ' (killed)' : ''} ${out}`.trim(),
  };
}

/** A TCP connection attempt with a sub-second bound (socat connect-timeout), for timing how fast a change takes effect. */
export async function tcpConnectQuick(ns: Ns, ip: string, port: number, timeoutMs = 300): Promise<ConnectResult> {
  const r = await nsRun(ns, 'socat', ['-u', 'OPEN:/dev/null', `TCP4:${ip}:${port},connect-timeout=${(timeoutMs / 1000).toFixed(3)}`], {
    timeoutMs: timeoutMs + 3000,
  });
  const refused = /refused/i.test(r.stderr);
  return {
    ok: r.code === 0,
    refused,
    timedOut: r.code !== 0 && !refused,
    ms: r.ms,
    detail: `socat connect ${ip}:${port} from ${ns ?? 'host'}: exit ${r.code} ${r.stderr.trim()}`.trim(),
  };
}

/**
 * Repeats a quick connection attempt until its outcome is `want`; returns
 * when the first attempt with that outcome started, relative to t0 (ms), or
 * undefined if it never happened within maxMs.
 */
export async function timeUntilConnect(ns: Ns, ip: string, port: number, want: boolean, t0: number, maxMs = 5000): Promise<number | undefined> {
  while (Date.now() - t0 < maxMs) {
    const start = Date.now();
    const r = await tcpConnectQuick(ns, ip, port, 300);
    if (r.ok === want) return start - t0;
    if (r.ok || r.refused) await sleep(50);
  }
  return undefined;
}

/** Sends one datagram to ip:port and waits (bounded) for the echo server's reply. */
export async function udpEcho(ns: Ns, ip: string, port: number, timeoutS = 2): Promise<{ ok: boolean; detail: string }> {
  const marker = `bastion-udp-${randomBytes(4).toString('hex')}`;
  const r = await nsRun(ns, 'socat', ['-T', String(timeoutS), '-', `UDP4:${ip}:${port}`], {
    input: `${marker}\n`,
    timeoutMs: (timeoutS + 3) * 1000,
  });
  return { ok: r.stdout.includes(marker), detail: `udp ${ip}:${port} from ${ns ?? 'host'}: exit ${r.code} ${r.stderr.trim()}` };
}

/** ICMP echo (busybox ping: iputils may not be installed), bounded; true if any reply came back. */
export async function ping(ns: Ns, ip: string, count = 1, timeoutS = 2): Promise<boolean> {
  const deadline = count + timeoutS;
  const r = await nsRun(ns, 'busybox', ['ping', '-c', String(count), '-W', String(timeoutS), '-w', String(deadline), ip], {
    timeoutMs: (deadline + 3) * 1000,
  });
  return /bytes from/.test(r.stdout);
}

export interface TransferResult {
  ok: boolean;
  sent: number;
  received: number;
  sentSha: string;
  receivedSha: string;
  ms: number;
  /** the longest pause between two pieces of echoed data, once data started flowing */
  maxGapMs: number;
  code: number | null;
  stderr: string;
}

export interface TransferOptions {
  bytes: number;
  /** pace the upload: `chunk` bytes every `intervalMs` (a rate-limited, long transfer) */
  chunk?: number;
  intervalMs?: number;
  /** hard bound on the whole transfer */
  timeoutMs?: number;
  /** socat inactivity timeout, seconds */
  idleS?: number;
}

/**
 * A transfer through a TCP echo server: `bytes` random bytes go up, the
 * echo comes back down over the same connection, and both checksums are
 * compared. Exercises the allowed direction and its replies at once.
 */
export function echoTransfer(ns: Ns, ip: string, port: number, o: TransferOptions): { done: Promise<TransferResult>; firstEcho: Promise<void> } {
  const data = randomBytes(o.bytes);
  const sentSha = createHash('sha256').update(data).digest('hex');
  const idleS = o.idleS ?? 5;
  const timeoutMs = o.timeoutMs ?? 30_000;
  const [c, a] = nsArgv(ns, 'socat', ['-t', '5', '-T', String(idleS), 'STDIO', `TCP4:${ip}:${port},connect-timeout=3`]);
  const t0 = Date.now();
  const child = spawn(c, a, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  track(child);
  const hash = createHash('sha256');
  let received = 0;
  let stderr = '';
  let last = 0;
  let maxGapMs = 0;
  let firstResolve!: () => void;
  const firstEcho = new Promise<void>((r) => (firstResolve = r));
  child.stdout!.on('data', (d: Buffer) => {
    const now = Date.now();
    if (last) maxGapMs = Math.max(maxGapMs, now - last);
    else firstResolve();
    last = now;
    received += d.length;
    hash.update(d);
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin!.on('error', () => undefined);
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), timeoutMs);
  let stopWriting = false;
  const done = new Promise<TransferResult>((resolve) => {
    const finish = (code: number | null) => {
      clearTimeout(timer);
      stopWriting = true;
      const receivedSha = hash.digest('hex');
      resolve({
        ok: code === 0 && received === o.bytes && receivedSha === sentSha,
        sent: o.bytes,
        received,
        sentSha,
        receivedSha,
        ms: Date.now() - t0,
        maxGapMs,
        code,
        stderr: stderr.trim(),
      });
    };
    child.once('error', (err) => {
      stderr += String(err);
      finish(-1);
    });
    child.once('close', (code) => finish(code));
  });
  // Upload: all at once (with backpressure), or paced.
  void (async () => {
    const chunk = o.chunk ?? 64 * 1024;
    for (let off = 0; off < data.length && !stopWriting; off += chunk) {
      const ok = child.stdin!.write(data.subarray(off, Math.min(off + chunk, data.length)));
      if (o.intervalMs) await sleep(o.intervalMs);
      else if (!ok) await new Promise<void>((r) => child.stdin!.once('drain', () => r()));
    }
    child.stdin!.end();
  })();
  return { done, firstEcho };
}

// ---------------------------------------------------------------------- ARP

export interface ArpingResult {
  replies: number;
  /** MAC addresses that answered */
  macs: string[];
  code: number | null;
  output: string;
}

/** `arping -c count -w deadline -i iface ip` (Thomas Habets' arping); parses the replies. */
export async function arping(ns: Ns, iface: string, ip: string, count = 2, deadlineS = 3): Promise<ArpingResult> {
  const r = await nsRun(ns, 'arping', ['-c', String(count), '-w', String(deadlineS), '-i', iface, ip], { timeoutMs: (deadlineS + 5) * 1000 });
  const macs = new Set<string>();
  let replies = 0;
  for (const m of r.stdout.matchAll(/bytes from ([0-9a-f]{2}(?::[0-9a-f]{2}){5}) \(([\d.]+)\)/gi)) {
    replies++;
    macs.add(m[1]!.toLowerCase());
  }
  return { replies, macs: [...macs], code: r.code, output: `${r.stdout}${r.stderr}`.trim() };
}

export interface Neighbour {
  dst: string;
  lladdr?: string;
  state: string[];
}

/** The namespace's neighbour (ARP) table for one interface. */
export async function neighbours(ns: Ns, dev = 'eth0'): Promise<Neighbour[]> {
  const r = await nsRun(ns, 'ip', ['-j', '-4', 'neigh', 'show', 'dev', dev], { timeoutMs: 3000 });
  if (r.code !== 0) throw new Error(`ip neigh in ${ns ?? 'host'}: ${r.stderr}`);
  const list = JSON.parse(r.stdout.trim() || '[]') as Array<{ dst: string; lladdr?: string; state?: string[] }>;
  return list.map((n) => ({ dst: n.dst, lladdr: n.lladdr?.toLowerCase(), state: n.state ?? [] }));
}

/** The neighbour entry for `ip`, if any. */
export async function neighbour(ns: Ns, ip: string, dev = 'eth0'): Promise<Neighbour | undefined> {
  return (await neighbours(ns, dev)).find((n) => n.dst === ip);
}

/** A MAC the namespace would use for `ip`: an entry that is usable, with a link-layer address. */
export function usableMac(n: Neighbour | undefined): string | undefined {
  if (!n || !n.lladdr) return undefined;
  if (n.state.some((s) => s === 'FAILED' || s === 'INCOMPLETE')) return undefined;
  return n.lladdr;
}

/** Empties the neighbour table of `dev`, static (permanent) entries included. */
export async function flushNeighbours(ns: Ns, dev = 'eth0'): Promise<void> {
  await nsRun(ns, 'ip', ['neigh', 'flush', 'dev', dev, 'nud', 'all'], { timeoutMs: 3000 });
}

// --------------------------------------------------------------------- nmap

function assertTestCidr(cidr: string): void {
  const m = /^10\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (!m || Number(m[4]) < 24) throw new Error(`refusing to scan ${cidr}: only a 10.x test subnet of /24 or smaller`);
}

/**
 * `nmap -sn` (ARP ping on a local segment) over the test subnet only; the
 * addresses reported up. nmap does not list the scanning host itself.
 */
export async function nmapPingScan(ns: Ns, iface: string, cidr: string, timeoutS = 30): Promise<{ up: string[]; output: string }> {
  assertTestCidr(cidr);
  const r = await nsRun(ns, 'nmap', ['-sn', '-n', '-e', iface, '--max-retries', '2', '--host-timeout', '5s', '-oG', '-', cidr], {
    timeoutMs: timeoutS * 1000,
  });
  const up = [...r.stdout.matchAll(/^Host: ([\d.]+) .*Status: Up/gm)].map((m) => m[1]!);
  return { up, output: `${r.stdout}${r.stderr}`.trim() };
}

// ------------------------------------------------------------------ tcpdump

export interface CaptureResult {
  /** one line per captured packet (tcpdump -n -e) */
  packets: string[];
  stderr: string;
}

export class Capture {
  constructor(
    private readonly bg: Background,
    readonly label: string,
  ) {}
  /** Packet lines captured so far. */
  get packets(): string[] {
    return this.bg.stdout.split('\n').filter((l) => l.trim() !== '');
  }
  async stop(): Promise<CaptureResult> {
    // SIGINT makes tcpdump flush what it has and print its statistics.
    await this.bg.stop('SIGINT');
    return { packets: this.packets, stderr: this.bg.stderr };
  }
}

/**
 * Starts tcpdump on `iface` (promiscuous unless promisc is false) with a
 * BPF filter; resolves once it is capturing. Bounded by maxMs even if the
 * test forgets to stop it.
 */
export async function startCapture(ns: Ns, iface: string, filter: string, o: { promisc?: boolean; maxMs?: number } = {}): Promise<Capture> {
  const args = ['-i', iface, '-n', '-e', '-l', '--immediate-mode', ...(o.promisc === false ? ['-p'] : []), ...(filter ? [filter] : [])];
  const bg = startBackground(ns, 'tcpdump', args);
  const label = `tcpdump -i ${iface} ${filter} in ${ns ?? 'host'}`;
  if (!(await waitFor(() => /listening on/.test(bg.stderr) || !bg.running, 5000, 50)) || !bg.running) {
    await bg.stop('SIGKILL');
    throw new Error(`${label} did not start: ${bg.stderr}`);
  }
  const t = setTimeout(() => void bg.stop('SIGINT'), o.maxMs ?? 60_000);
  void bg.exited.then(() => clearTimeout(t));
  return new Capture(bg, label);
}

// --------------------------------------------------------------- assertions

/** Fails unless every probe connected; the message lists each failure with what the probe saw. */
export function expectAllConnect(results: Array<[string, ConnectResult]>): void {
  const bad = results.filter(([, r]) => !r.ok).map(([what, r]) => `  ${what}: ${r.detail}`);
  if (bad.length) throw new Error(`expected these connections to succeed, they did not:\n${bad.join('\n')}`);
}

/** Fails if any probe connected. */
export function expectNoneConnect(results: Array<[string, ConnectResult]>): void {
  const bad = results.filter(([, r]) => r.ok).map(([what, r]) => `  ${what}: ${r.detail}`);
  if (bad.length) throw new Error(`expected these connections to be refused, they were accepted:\n${bad.join('\n')}`);
}

/** Runs labelled connection probes in parallel. */
export async function connectAll(probes: Array<[string, Ns, string, number]>, timeoutS = 2): Promise<Array<[string, ConnectResult]>> {
  return Promise.all(probes.map(async ([what, ns, ip, port]) => [what, await tcpConnect(ns, ip, port, timeoutS)] as [string, ConnectResult]));
}

/** Captures on several interfaces at once while `during` runs; results in the order given. */
export async function captureMany<T>(
  points: Array<{ ns: Ns; iface: string; filter: string; promisc?: boolean }>,
  during: () => Promise<T>,
  settleMs = 300,
): Promise<{ captures: CaptureResult[]; result: T }> {
  const caps: Capture[] = [];
  try {
    for (const p of points) caps.push(await startCapture(p.ns, p.iface, p.filter, { promisc: p.promisc }));
    const result = await during();
    await sleep(settleMs);
    const captures: CaptureResult[] = [];
    for (const c of caps) captures.push(await c.stop());
    return { captures, result };
  } finally {
    await Promise.all(caps.map((c) => c.stop()));
  }
}
