/**
 * Probes and attacks run inside a container's network namespace with the
 * host's own tools (nc, arping, nmap, hping3, arpspoof, tcpdump), exactly as
 * a process with CAP_NET_RAW inside the container could. Every probe is
 * bounded in time.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type Netns = { pid: number } | { name: string };

function nsArgs(ns: Netns, cmd: string, args: string[]): [string, string[]] {
  if ('pid' in ns) return ['nsenter', [`--net=/proc/${ns.pid}/ns/net`, cmd, ...args]];
  return ['ip', ['netns', 'exec', ns.name, cmd, ...args]];
}

export async function inNetns(ns: Netns, cmd: string, args: string[], timeoutMs = 10_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const [c, a] = nsArgs(ns, cmd, args);
  try {
    const r = await run(c, a, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

/** A TCP connection attempt (nc -z), true if it was accepted. */
export async function tcpConnects(ns: Netns, ip: string, port: number, timeoutS = 2): Promise<boolean> {
  const r = await inNetns(ns, 'nc', ['-z', '-w', String(timeoutS), ip, String(port)], (timeoutS + 3) * 1000);
  return r.code === 0;
}

/** Send `bytes` to ip:port and report whether all of it was accepted. */
export async function transfers(ns: Netns, ip: string, port: number, bytes: number, timeoutS = 5): Promise<boolean> {
  const [c, a] = nsArgs(ns, 'nc', ['-N', '-w', String(timeoutS), ip, String(port)]);
  return new Promise((resolve) => {
    const p = spawn(c, a, { stdio: ['pipe', 'ignore', 'ignore'] });
    const timer = setTimeout(() => p.kill('SIGKILL'), (timeoutS + 3) * 1000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code === 0);
    });
    p.on('error', () => resolve(false));
    p.stdin.on('error', () => undefined);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let left = bytes;
    const write = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!p.stdin.write(chunk.subarray(0, n))) return p.stdin.once('drain', write);
      }
      p.stdin.end();
    };
    write();
  });
}

/** ARP-probe each address once; returns those that answered, with the MAC they answered with. */
export async function arpScan(ns: Netns, iface: string, ips: string[]): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  await Promise.all(
    ips.map(async (ip) => {
      const r = await inNetns(ns, 'arping', ['-c', '2', '-w', '2', '-i', iface, ip], 6000);
      const m = /from ([0-9a-f:]{17})/i.exec(r.stdout) ?? /bytes from ([0-9a-f:]{17})/i.exec(r.stdout);
      if (m) found.set(ip, m[1]!.toLowerCase());
    }),
  );
  return found;
}

/** nmap ARP ping sweep of a subnet; returns the addresses reported up (other than the scanner). */
export async function nmapSweep(ns: Netns, iface: string, cidr: string): Promise<string[]> {
  const r = await inNetns(ns, 'nmap', ['-sn', '-n', '-PR', '--max-retries', '1', '--host-timeout', '3s', '-e', iface, cidr], 60_000);
  const up: string[] = [];
  for (const m of r.stdout.matchAll(/Nmap scan report for (\d+\.\d+\.\d+\.\d+)/g)) up.push(m[1]!);
  return up;
}

/** nmap TCP connect scan of a few ports; returns the open ones. */
export async function portScan(ns: Netns, ip: string, ports: number[]): Promise<number[]> {
  const r = await inNetns(ns, 'nmap', ['-sT', '-n', '-Pn', '--max-retries', '1', '--host-timeout', '10s', '-p', ports.join(','), ip], 30_000);
  const open: number[] = [];
  for (const m of r.stdout.matchAll(/^(\d+)\/tcp\s+open/gm)) open.push(Number(m[1]));
  return open;
}

/**
 * Capture on an interface for `ms` milliseconds (promiscuous, as tcpdump is
 * by default) while `during` runs; returns the number of packets matching
 * the filter.
 */
export async function captureWhile(ns: Netns | 'host', iface: string, filter: string, ms: number, during: () => Promise<unknown>): Promise<number> {
  const args = ['-i', iface, '-n', '-l', '-q', filter];
  const [c, a] = ns === 'host' ? ['tcpdump', args] : nsArgs(ns, 'tcpdump', args);
  const p = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((r) => p.once('exit', r));
  let lines = 0;
  let started = false;
  p.stdout.setEncoding('utf8');
  p.stdout.on('data', (d: string) => (lines += d.split('\n').filter(Boolean).length));
  await new Promise<void>((resolve) => {
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (d: string) => {
      if (!started && /listening on/.test(d)) {
        started = true;
        resolve();
      }
    });
    setTimeout(resolve, 2000);
    void exited.then(() => resolve());
  });
  const t0 = Date.now();
  await during();
  const rest = ms - (Date.now() - t0);
  if (rest > 0) await new Promise((r) => setTimeout(r, rest));
  p.kill('SIGINT');
  await exited;
  return lines;
}

/** Forged TCP SYNs (hping3) from `ns`, with a chosen source IP and optionally MAC-level forgery via the interface. */
export async function spoofedSyns(ns: Netns, spoofIp: string, dstIp: string, dport: number, count = 5): Promise<void> {
  await inNetns(ns, 'hping3', ['-c', String(count), '-i', 'u100000', '-S', '-a', spoofIp, '-p', String(dport), dstIp], 15_000);
}

/** Run arpspoof for `ms`: tell `victim` that `impersonated` is at our MAC. */
export async function arpspoofFor(ns: Netns, iface: string, victim: string, impersonated: string, ms: number): Promise<void> {
  const [c, a] = nsArgs(ns, 'arpspoof', ['-i', iface, '-t', victim, impersonated]);
  const p = spawn(c, a, { stdio: 'ignore' });
  p.on('error', () => undefined);
  await new Promise((r) => setTimeout(r, ms));
  p.kill('SIGINT');
  await new Promise((r) => setTimeout(r, 300));
  p.kill('SIGKILL');
}

/** The MAC a namespace has for `ip` in its neighbour table, if any. */
export async function neighbourMac(ns: Netns, ip: string): Promise<string | undefined> {
  const r = await inNetns(ns, 'ip', ['-j', 'neigh', 'show', ip]);
  try {
    const rows = JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string; state?: string[] }>;
    return rows.find((x) => x.lladdr)?.lladdr?.toLowerCase();
  } catch {
    return undefined;
  }
}

/** A permanent neighbour entry: the MAC of `ip` known without asking ARP (Docker derives it from the IP). */
export async function pinNeighbour(ns: Netns, iface: string, ip: string, mac: string): Promise<void> {
  const r = await inNetns(ns, 'ip', ['neigh', 'replace', ip, 'lladdr', mac, 'dev', iface, 'nud', 'permanent'], 3000);
  if (r.code !== 0) throw new Error(`ip neigh replace ${ip}: ${r.stderr.trim()}`);
}

/** Removes a neighbour entry (permanent ones too). */
export async function forgetNeighbour(ns: Netns, iface: string, ip: string): Promise<void> {
  await inNetns(ns, 'ip', ['neigh', 'del', ip, 'dev', iface], 3000);
}

/**
 * A man in the middle: `attacker` runs arpspoof to tell `victim` that
 * `impersonated`'s IP is at the attacker's MAC, then captures on its own
 * interface while the victim sends to the impersonated address. Returns the
 * MAC the victim then has for that address and how many of the victim's
 * packets to it reached the attacker.
 */
export async function poisonThenSniff(
  attacker: Netns,
  iface: string,
  victim: { ns: Netns; ip: string },
  impersonated: { ip: string; port: number },
  o: { poisonMs: number; bytes: number },
): Promise<{ victimHas?: string; captured: number }> {
  const [c, a] = nsArgs(attacker, 'arpspoof', ['-i', iface, '-t', victim.ip, impersonated.ip]);
  const spoofer = spawn(c, a, { stdio: 'ignore' });
  spoofer.on('error', () => undefined);
  try {
    await new Promise((r) => setTimeout(r, o.poisonMs));
    const victimHas = await neighbourMac(victim.ns, impersonated.ip);
    const captured = await captureWhile(attacker, iface, `tcp and src host ${victim.ip} and dst host ${impersonated.ip}`, 1500, () =>
      transfers(victim.ns, impersonated.ip, impersonated.port, o.bytes, 3),
    );
    return { ...(victimHas ? { victimHas } : {}), captured };
  } finally {
    spoofer.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 300));
    spoofer.kill('SIGKILL');
  }
}
