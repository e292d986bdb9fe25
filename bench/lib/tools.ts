/**
 * Wrappers for the traffic tools: iperf3 (throughput), sockperf ping-pong
 * (request/response latency), bbconn (new connections per second) and bbprobe
 * (time until a newly allowed port is reachable). The C tools under
 * bench/tools/ are compiled here with gcc.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Background, hrMs, inNs, run, runSync, sleep } from './exec.js';

export interface ToolPaths {
  bbconn: string;
  bbprobe: string;
  bbnsconf: string;
}

/** compile bench/tools/*.c into outDir when the binary is missing or older than its source */
export function buildTools(srcDir: string, outDir: string): ToolPaths {
  mkdirSync(outDir, { recursive: true });
  const out = {} as ToolPaths;
  for (const name of ['bbconn', 'bbprobe', 'bbnsconf'] as const) {
    const src = join(srcDir, `${name}.c`);
    const bin = join(outDir, name);
    if (!existsSync(bin) || statSync(bin).mtimeMs < statSync(src).mtimeMs) {
      runSync(['gcc', '-O2', '-Wall', '-Wextra', '-pthread', '-o', bin, src]);
    }
    out[name] = bin;
  }
  return out;
}

/* ---------------------------------------------------------------- iperf3 */

export interface IperfResult {
  gbps: number;
  retransmits: number | null;
  cpuSenderPct: number | null;
  cpuReceiverPct: number | null;
}

export function startIperfServer(ns: string, bindIp: string, port: number): Background {
  return new Background('iperf3-server', inNs(ns, ['iperf3', '-s', '-B', bindIp, '-p', String(port)]));
}

export async function iperf(ns: string, host: string, port: number, seconds: number, streams: number): Promise<IperfResult> {
  // iperf3 answers "server is busy" for a moment after the previous test; retry
  for (let attempt = 0; ; attempt++) {
    const r = await run(
      inNs(ns, ['iperf3', '-c', host, '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J', '--connect-timeout', '3000']),
      { timeoutMs: (seconds + 20) * 1000, allowFail: true },
    );
    let j: any;
    try {
      j = JSON.parse(r.stdout);
    } catch {
      j = null;
    }
    if (r.code === 0 && j?.end?.sum_received) {
      return {
        gbps: j.end.sum_received.bits_per_second / 1e9,
        retransmits: j.end.sum_sent?.retransmits ?? null,
        cpuSenderPct: j.end.cpu_utilization_percent?.host_total ?? null,
        cpuReceiverPct: j.end.cpu_utilization_percent?.remote_total ?? null,
      };
    }
    const err = j?.error ?? (r.stderr.trim() || r.stdout.trim()).slice(-500);
    if (attempt >= 3) throw new Error(`iperf3 ${streams} stream(s) to ${host}:${port} failed: ${err}`);
    await sleep(500);
  }
}

/* ---------------------------------------------------------------- sockperf */

export interface RrResult {
  p50Us: number;
  p99Us: number;
  avgUs: number | null;
  observations: number | null;
}

export function startSockperfServer(ns: string, bindIp: string, port: number, proto: 'tcp' | 'udp'): Background {
  const args = ['sockperf', 'server', '-i', bindIp, '-p', String(port)];
  if (proto === 'tcp') args.push('--tcp');
  return new Background('sockperf-server', inNs(ns, args));
}

/** parse sockperf's "---> percentile 50.000 =   23.313" lines (values in usec) */
export function parseSockperf(text: string): RrResult {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/\x1b\[[0-9;]*m/g, '');
  const pct = (p: string): number => {
    const m = clean.match(new RegExp(`percentile ${p.replace('.', '\\.')}\\s*=\\s*([0-9.]+)`));
    if (!m) throw new Error(`sockperf output has no percentile ${p}:\n${clean.slice(-1500)}`);
    return Number(m[1]);
  };
  const avg = clean.match(/avg-(?:rtt|lat)=([0-9.]+)/);
  const obs = clean.match(/Total (\d+) observations/);
  return {
    p50Us: pct('50.000'),
    p99Us: pct('99.000'),
    avgUs: avg ? Number(avg[1]) : null,
    observations: obs ? Number(obs[1]) : null,
  };
}

export async function sockperfPingPong(ns: string, host: string, port: number, seconds: number, proto: 'tcp' | 'udp', msgSize = 64): Promise<RrResult> {
  const args = ['sockperf', 'ping-pong', '-i', host, '-p', String(port), '-t', String(seconds), '--full-rtt', '-m', String(msgSize)];
  if (proto === 'tcp') args.push('--tcp');
  for (let attempt = 0; ; attempt++) {
    const r = await run(inNs(ns, args), { timeoutMs: (seconds + 20) * 1000, allowFail: true });
    try {
      if (r.code !== 0) throw new Error(`exit ${r.code}: ${(r.stderr + r.stdout).slice(-800)}`);
      return parseSockperf(r.stdout + '\n' + r.stderr);
    } catch (err) {
      if (attempt >= 2) throw new Error(`sockperf ping-pong to ${host}:${port} failed: ${(err as Error).message}`);
      await sleep(500);
    }
  }
}

/* ---------------------------------------------------------------- bbconn */

export interface ConnResult {
  conns: number;
  errors: number;
  timeouts: number;
  seconds: number;
  conn_per_s: number;
}

export interface ConnOptions {
  threads: number;
  concurrency: number;
  linger0: boolean;
}

export const DEFAULT_CONN_OPTIONS: ConnOptions = { threads: 2, concurrency: 16, linger0: false };

export function startConnServer(bin: string, ns: string, bindIp: string, ports: number[], range: [number, number] | null, threads = 2): Background {
  const args = [bin, 'server', '--bind', bindIp, '--threads', String(threads)];
  for (const p of ports) args.push('--port', String(p));
  if (range) args.push('--range', `${range[0]}-${range[1]}`);
  return new Background('bbconn-server', inNs(ns, args));
}

export async function connRate(bin: string, ns: string, host: string, port: number, seconds: number, o: ConnOptions = DEFAULT_CONN_OPTIONS): Promise<ConnResult> {
  const args = [bin, 'client', '--host', host, '--port', String(port), '--duration', String(seconds), '--threads', String(o.threads), '--concurrency', String(o.concurrency)];
  if (o.linger0) args.push('--linger0');
  const r = await run(inNs(ns, args), { timeoutMs: (seconds + 20) * 1000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as ConnResult;
}

/* ---------------------------------------------------------------- bbprobe */

export interface ProbeHandle {
  /** resolves with the CLOCK_MONOTONIC ms at which the first connection succeeded, or null on timeout */
  result: Promise<{ okMs: number; launchMs: number; attempts: number; refused: number } | null>;
  proc: Background;
}

/**
 * Start probing host:port from ns; resolves once the prober runs (so the
 * caller applies its change only while the probe is already knocking).
 */
export async function startProbe(bin: string, ns: string, host: string, port: number, timeoutMs: number, intervalUs = 250): Promise<ProbeHandle> {
  const proc = new Background('bbprobe', inNs(ns, [bin, '--host', host, '--port', String(port), '--timeout-ms', String(timeoutMs), '--interval-us', String(intervalUs)]));
  // generous: a daemon starting thousands of containers can make process start-up slow
  if (!(await proc.waitFor(/^ready /m, 30_000))) {
    await proc.stop();
    throw new Error(`bbprobe did not start: ${proc.out.slice(-500)}`);
  }
  const result = (async () => {
    await proc.waitExit(timeoutMs + 10_000);
    const m = proc.out.match(/^ok (\d+) (\d+) (\d+) (\d+)/m);
    if (!m) return null;
    return { okMs: Number(BigInt(m[1]!)) / 1e6, launchMs: Number(BigInt(m[2]!)) / 1e6, attempts: Number(m[3]), refused: Number(m[4]) };
  })();
  return { result, proc };
}

/** true when a TCP connection from ns to host:port completes within timeoutMs */
export async function canConnect(bin: string, ns: string, host: string, port: number, timeoutMs: number): Promise<boolean> {
  const p = await startProbe(bin, ns, host, port, timeoutMs, 2000);
  const r = await p.result;
  return r !== null;
}

export { hrMs };
