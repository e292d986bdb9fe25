/**
 * Test topologies: a Linux bridge, one network namespace per "container",
 * veth pairs between them. This is what Docker builds for a bridge network,
 * minus Docker, so the datapath and attack tests control every piece.
 *
 *   host netns:  <prefix>br (bridge, gateway IP) ── <prefix>h0 ── <prefix>h1 ...
 *                                                     │            │
 *   <prefix>-a:                                      eth0         │
 *   <prefix>-b:                                                  eth0
 *
 * Every name starts with a random prefix (bt + 4 hex digits), so concurrent
 * test files never collide, and everything created is recorded and removed by
 * destroy(). Call it from your own after() hook; whatever is still alive is
 * also destroyed by a root-level node:test after() hook at the end of the
 * test file (registered when this module is imported under the test runner:
 * an after() registered from inside a before() hook or a test would fire as
 * soon as that hook or test ends), on process exit, and on SIGINT/SIGTERM.
 * Only 10.x subnets of our own bridge are used: tests must never send traffic
 * anywhere else.
 */
import { execFile, execFileSync, spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { NetnsRef } from '../../src/manager/endpoint.js';
import { formatCidr4, ipInCidr4, mustParseCidr4, parseIpv4 } from '../../src/net/ip.js';

export interface ContainerSpec {
  /** short name, used for the namespace name: <prefix>-<name> */
  name: string;
  /** '10.77.0.2' (the bridge's prefix length is used) or '10.77.0.2/24' */
  ip: string;
  /** container MAC; random locally administered when omitted */
  mac?: string;
}

export interface TopologyOptions {
  /** name prefix; default bt + 4 random hex digits. At most 9 characters (interface names are ≤ 15). */
  prefix?: string;
  /** the bridge's address, which is the containers' gateway: '10.77.0.1/24' */
  bridgeIp: string;
  containers: ContainerSpec[];
  /** keep IPv6 enabled in the containers (default: disabled, as Docker does for IPv4-only networks) */
  ipv6?: boolean;
  /**
   * Insert `iptables -I FORWARD -i BR -o BR -j ACCEPT` (removed on destroy),
   * as Docker does for its own bridges. Needed when br_netfilter sends
   * bridged frames through a FORWARD chain whose policy is DROP (any host
   * running Docker). Default true.
   */
  acceptForward?: boolean;
  /** leave the bridge MAC to the kernel (it then follows the lowest port MAC) instead of fixing a random one */
  kernelBridgeMac?: boolean;
  /**
   * include this topology in the end-of-file cleanup (default true). Exit and
   * signal cleanup always apply.
   */
  registerCleanup?: boolean;
}

export interface Container {
  name: string;
  /** the namespace's name under /run/netns */
  netns: string;
  netnsRef: NetnsRef;
  /** container-side interface name (eth0) */
  ifname: string;
  /** its ifindex inside the namespace */
  ifindex: number;
  ip: string;
  prefixLen: number;
  mac: string;
  /** host-side veth name and ifindex (where Bastion's stack is attached) */
  hostIf: string;
  hostIfindex: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** exit code (0 unless allowFail) */
  code: number;
}

export interface ExecOptions {
  timeoutMs?: number;
  /** resolve with the exit code instead of rejecting on failure */
  allowFail?: boolean;
  /** written to the command's stdin */
  input?: string | Buffer;
}

export interface Topology {
  prefix: string;
  bridge: string;
  bridgeIfindex: number;
  bridgeMac: string;
  /** the gateway address, without prefix length */
  bridgeIp: string;
  prefixLen: number;
  /** e.g. '10.77.0.0/24' */
  subnet: string;
  containers: Container[];
  /** by spec name; throws for unknown names */
  container(name: string): Container;
  /** adds one more container (churn tests: a new container reusing an old IP) */
  addContainer(spec: ContainerSpec): Promise<Container>;
  /** removes a container's namespace and veth */
  removeContainer(name: string): Promise<void>;
  /** runs a command in a container's namespace (by container name or namespace name) */
  exec(ns: string, cmd: string, args?: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** ping from a container (by name or namespace name); true when answered */
  ping(ns: string, ip: string, opts?: { count?: number; timeoutS?: number }): Promise<boolean>;
  /** starts a long-running command in a namespace; killed on destroy() */
  spawn(ns: string, cmd: string, args?: string[], opts?: SpawnOptions): ChildProcess;
  /** removes everything this topology created; safe to call twice, keeps going past failures */
  destroy(): Promise<void>;
}

// ------------------------------------------------------------- processes

/** Runs a command without a shell; rejects with stderr in the message unless allowFail. */
/** A counter of an interface in a namespace (/sys/class/net/IF/statistics/NAME: tx_packets, rx_bytes...). */
export function interfaceStat(ns: string, ifname: string, name: string): number {
  return Number(execFileSync('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${ifname}/statistics/${name}`]).toString().trim());
}

/** The index of an interface in a namespace. */
export function ifindexIn(ns: string, ifname: string): number {
  const out = execFileSync('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname]).toString();
  return (JSON.parse(out) as Array<{ ifindex: number }>)[0]!.ifindex;
}

export function run(cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        if (err && !opts.allowFail) {
          const detail = String(stderr).trim() || err.message;
          reject(new Error(`${cmd} ${args.join(' ')} failed (${err.killed ? 'timed out' : `exit ${code}`}): ${detail}`));
          return;
        }
        resolve({ stdout: String(stdout), stderr: String(stderr), code });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs `cmd` inside the named namespace (`ip netns exec`). */
export function execIn(netns: string, cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
  return run('ip', ['netns', 'exec', netns, cmd, ...args], opts);
}

/** Starts `cmd` inside the named namespace. `ip netns exec` execs the command, so the pid is the command's. */
export function spawnIn(netns: string, cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
  return spawnChild('ip', ['netns', 'exec', netns, cmd, ...args], { stdio: 'pipe', ...opts });
}

/** ping(8) if installed, else busybox's (iputils is not always there). */
function pingCommand(): [string, string[]] {
  for (const p of ['/usr/bin/ping', '/bin/ping', '/usr/sbin/ping']) if (existsSync(p)) return [p, []];
  return ['busybox', ['ping']];
}

/**
 * True when `ip` answers `count` ICMP echoes from inside `netns` within
 * `timeoutS` seconds each. Never throws for "no answer": that is a result.
 */
export async function ping(netns: string, ip: string, opts: { count?: number; timeoutS?: number } = {}): Promise<boolean> {
  const [cmd, pre] = pingCommand();
  const r = await execIn(netns, cmd, [...pre, '-c', String(opts.count ?? 1), '-W', String(opts.timeoutS ?? 1), ip], { allowFail: true });
  return r.code === 0;
}

// ------------------------------------------------------------- addresses

/** A fresh prefix: 'bt' + 4 hex digits. */
export function uniquePrefix(): string {
  return `bt${randomBytes(2).toString('hex')}`;
}

/** "a.b.c.d/len" (or a bare address with defaultLen) → its parts; throws on anything else. */
function parseCidr(cidr: string, defaultLen?: number): { ip: string; len: number } {
  const [ip, len] = cidr.split('/');
  const n = len === undefined ? defaultLen : Number(len);
  if (n === undefined || !Number.isInteger(n) || n < 0 || n > 32) throw new Error(`bad prefix length in ${cidr}`);
  if (parseIpv4(ip!) === undefined) throw new Error(`not an IPv4 address: ${ip}`);
  return { ip: ip!, len: n };
}
function overlaps(a: string, alen: number, b: string, blen: number): boolean {
  return ipInCidr4(mustParseCidr4(`${a}/${Math.min(alen, blen)}`), parseIpv4(b)!);
}

interface RouteEntry {
  dst: string;
  dev?: string;
}

/** Host routes (main table) overlapping `subnet`/`len`, default route excluded. */
async function routesOverlapping(ip: string, len: number): Promise<RouteEntry[]> {
  const { stdout } = await run('ip', ['-j', '-4', 'route', 'show', 'table', 'main']);
  const routes = JSON.parse(stdout.trim() || '[]') as RouteEntry[];
  return routes.filter((r) => {
    if (r.dst === 'default') return false;
    const { ip: rip, len: rlen } = parseCidr(r.dst, 32);
    return overlaps(ip, len, rip, rlen);
  });
}

/**
 * A /24 in 10.0.0.0/8 that no host route overlaps, as its first three
 * octets ('10.123.45'). Use it to build bridgeIp and container IPs when a
 * test does not care which subnet it gets.
 */
export async function freeSubnet24(): Promise<string> {
  for (let i = 0; i < 50; i++) {
    const base = `10.${randomInt(100, 250)}.${randomInt(0, 256)}`;
    if ((await routesOverlapping(`${base}.0`, 24)).length === 0) return base;
  }
  throw new Error('no free 10.x.y.0/24 subnet found');
}

function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02; // locally administered, unicast
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

// ------------------------------------------------------------ bookkeeping

/**
 * Everything a topology created, in creation order. Cleanup undoes it in
 * reverse; every step tolerates "already gone".
 */
type Resource =
  | { kind: 'netns'; name: string }
  | { kind: 'link'; name: string }
  | { kind: 'iptables'; args: string[] }
  | { kind: 'process'; child: ChildProcess };

const live = new Set<Resource[]>();
/** destroy() of every topology the end-of-file hook must take care of */
const endOfFile = new Set<() => Promise<void>>();
let exitHooksInstalled = false;

// Under `node --test` every file runs in a child with NODE_TEST_CONTEXT set.
// Registering here, at import time, attaches the hook to the file's root
// test rather than to whatever hook or test happens to call createTopology.
if (process.env.NODE_TEST_CONTEXT) {
  after(async () => {
    const errors: unknown[] = [];
    for (const destroy of [...endOfFile]) await destroy().catch((e: unknown) => errors.push(e));
    if (errors.length) throw errors[0];
  });
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  // 'exit' handlers must be synchronous: use execFileSync.
  process.on('exit', () => {
    for (const res of live) cleanupSync(res);
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const res of live) cleanupSync(res);
      live.clear();
      process.kill(process.pid, sig); // default action now that our handler is gone
    });
  }
}

function undoArgs(r: Resource): [string, string[]] | undefined {
  switch (r.kind) {
    case 'netns':
      return ['ip', ['netns', 'del', r.name]];
    case 'link':
      return ['ip', ['link', 'del', r.name]];
    case 'iptables':
      return ['iptables', ['-w', '-D', ...r.args]];
    case 'process':
      return undefined;
  }
}

function isGone(r: Resource): boolean {
  if (r.kind === 'netns') return !existsSync(`/run/netns/${r.name}`);
  if (r.kind === 'link') return !existsSync(`/sys/class/net/${r.name}`);
  return false;
}

/** Undo order: processes first (they may hold a namespace busy), then the rest in reverse. */
function undoOrder(resources: Resource[]): Resource[] {
  const rev = [...resources].reverse();
  return [...rev.filter((r) => r.kind === 'process'), ...rev.filter((r) => r.kind !== 'process')];
}

function cleanupSync(resources: Resource[]): void {
  for (const r of undoOrder(resources)) {
    if (r.kind === 'process') {
      if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
      continue;
    }
    if (isGone(r)) continue;
    const [cmd, args] = undoArgs(r)!;
    try {
      execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* best effort at exit */
    }
  }
  resources.length = 0;
}

async function cleanupAsync(resources: Resource[]): Promise<void> {
  const errors: string[] = [];
  for (const r of undoOrder(resources)) {
    if (r.kind === 'process') {
      if (r.child.exitCode === null && r.child.signalCode === null) {
        const exited = new Promise<void>((res) => r.child.once('exit', () => res()));
        r.child.kill('SIGKILL');
        await Promise.race([exited, new Promise((res) => setTimeout(res, 2000))]);
      }
      continue;
    }
    if (isGone(r)) continue;
    const [cmd, args] = undoArgs(r)!;
    const res = await run(cmd, args, { allowFail: true });
    // A netns going away takes its veth ends (and so the host ends) with it.
    if (res.code !== 0 && !isGone(r) && !/Cannot find device|No such file|does not exist|Bad rule/i.test(res.stderr)) {
      errors.push(`${cmd} ${args.join(' ')}: ${res.stderr.trim()}`);
    }
  }
  resources.length = 0;
  if (errors.length) throw new Error(`topology cleanup left things behind:\n${errors.join('\n')}`);
}

// -------------------------------------------------------------- topology

async function linkInfo(name: string, netns?: string): Promise<{ ifindex: number; address: string }> {
  const args = netns ? ['-n', netns, '-j', 'link', 'show', 'dev', name] : ['-j', 'link', 'show', 'dev', name];
  const { stdout } = await run('ip', args);
  const [l] = JSON.parse(stdout) as Array<{ ifindex: number; address: string }>;
  if (!l) throw new Error(`link ${name} not found`);
  return l;
}

function bridgeNfCallsIptables(): boolean {
  try {
    return readFileSync('/proc/sys/net/bridge/bridge-nf-call-iptables', 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

export async function createTopology(opts: TopologyOptions): Promise<Topology> {
  const prefix = opts.prefix ?? uniquePrefix();
  if (!/^[a-z][a-z0-9]{0,8}$/.test(prefix)) throw new Error(`prefix ${prefix}: 1-9 lowercase letters/digits, starting with a letter`);
  const { ip: bridgeIp, len: prefixLen } = parseCidr(opts.bridgeIp);
  if (!bridgeIp.startsWith('10.')) throw new Error(`bridgeIp ${opts.bridgeIp}: tests only use 10.0.0.0/8 subnets`);
  if (prefixLen < 8 || prefixLen > 30) throw new Error(`bridgeIp ${opts.bridgeIp}: prefix length must be 8..30`);
  const subnet = formatCidr4(mustParseCidr4(`${bridgeIp}/${prefixLen}`));

  const clash = await routesOverlapping(bridgeIp, prefixLen);
  if (clash.length) {
    throw new Error(
      `subnet ${subnet} overlaps host route ${clash.map((r) => `${r.dst} dev ${r.dev ?? '?'}`).join(', ')} (another topology? use freeSubnet24())`,
    );
  }

  const resources: Resource[] = [];
  live.add(resources);
  installExitHooks();

  const bridge = `${prefix}br`;
  const containers: Container[] = [];
  let nextIndex = 0;
  let destroyed = false;

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    endOfFile.delete(destroy);
    try {
      await cleanupAsync(resources);
    } finally {
      live.delete(resources);
    }
  };
  const alive = (): void => {
    if (destroyed) throw new Error(`topology ${prefix} was destroyed`);
  };

  const nsName = (ns: string): string => containers.find((c) => c.name === ns)?.netns ?? ns;

  const addContainer = async (spec: ContainerSpec): Promise<Container> => {
    alive();
    if (!/^[A-Za-z0-9_.-]{1,40}$/.test(spec.name)) throw new Error(`container name ${spec.name}: letters, digits, _ . - only`);
    if (containers.some((c) => c.name === spec.name)) throw new Error(`container ${spec.name} already exists`);
    const { ip, len } = parseCidr(spec.ip, prefixLen);
    if (!overlaps(ip, len, bridgeIp, prefixLen)) throw new Error(`container ${spec.name}: ${spec.ip} is not in ${subnet}`);
    const i = nextIndex++;
    const netns = `${prefix}-${spec.name}`;
    const hostIf = `${prefix}h${i}`;
    const peerTmp = `${prefix}c${i}`;
    const mac = (spec.mac ?? randomMac()).toLowerCase();

    resources.push({ kind: 'netns', name: netns });
    await run('ip', ['netns', 'add', netns]);
    resources.push({ kind: 'link', name: hostIf });
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', peerTmp]);
    await run('ip', ['link', 'set', peerTmp, 'netns', netns]);
    await run('ip', ['-n', netns, 'link', 'set', peerTmp, 'name', 'eth0']);
    await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'address', mac]);
    if (!opts.ipv6) {
      // Before the link comes up, so no link-local address or DAD traffic appears.
      await execIn(netns, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.eth0.disable_ipv6=1']);
    }
    await run('ip', ['-n', netns, 'addr', 'add', `${ip}/${len}`, 'dev', 'eth0']);
    await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['link', 'set', hostIf, 'master', bridge]);
    await run('ip', ['link', 'set', hostIf, 'up']);
    await run('ip', ['-n', netns, 'route', 'add', 'default', 'via', bridgeIp, 'dev', 'eth0']);

    const host = await linkInfo(hostIf);
    const inner = await linkInfo('eth0', netns);
    const c: Container = {
      name: spec.name,
      netns,
      netnsRef: { kind: 'name', name: netns },
      ifname: 'eth0',
      ifindex: inner.ifindex,
      ip,
      prefixLen: len,
      mac,
      hostIf,
      hostIfindex: host.ifindex,
    };
    containers.push(c);
    return c;
  };

  const removeContainer = async (name: string): Promise<void> => {
    alive();
    const idx = containers.findIndex((c) => c.name === name);
    if (idx < 0) throw new Error(`no container ${name}`);
    const c = containers[idx]!;
    await run('ip', ['netns', 'del', c.netns]);
    // Deleting the namespace deletes eth0 and with it the host end, asynchronously.
    for (let i = 0; i < 50 && existsSync(`/sys/class/net/${c.hostIf}`); i++) await new Promise((r) => setTimeout(r, 20));
    await run('ip', ['link', 'del', c.hostIf], { allowFail: true });
    containers.splice(idx, 1);
  };

  try {
    resources.push({ kind: 'link', name: bridge });
    // A fixed MAC, as Docker gives its bridges: otherwise the bridge takes the
    // lowest MAC of its ports and changes as containers join.
    await run('ip', ['link', 'add', bridge, ...(opts.kernelBridgeMac ? [] : ['address', randomBridgeMac()]), 'type', 'bridge']);
    await run('ip', ['addr', 'add', `${bridgeIp}/${prefixLen}`, 'dev', bridge]);
    await run('ip', ['link', 'set', bridge, 'up']);
    if ((opts.acceptForward ?? true) && bridgeNfCallsIptables()) {
      const args = ['FORWARD', '-i', bridge, '-o', bridge, '-j', 'ACCEPT'];
      resources.push({ kind: 'iptables', args });
      await run('iptables', ['-w', '-I', ...args]);
    }
    for (const spec of opts.containers) await addContainer(spec);
  } catch (e) {
    await destroy().catch(() => undefined);
    throw e;
  }

  const br = await linkInfo(bridge).catch(async (e) => {
    await destroy();
    throw e;
  });

  const topo: Topology = {
    prefix,
    bridge,
    bridgeIfindex: br.ifindex,
    bridgeMac: br.address,
    bridgeIp,
    prefixLen,
    subnet,
    containers,
    container(name) {
      const c = containers.find((x) => x.name === name);
      if (!c) throw new Error(`no container ${name} in topology ${prefix} (${containers.map((x) => x.name).join(', ')})`);
      return c;
    },
    addContainer,
    removeContainer,
    exec: (ns, cmd, args = [], o = {}) => execIn(nsName(ns), cmd, args, o),
    ping: (ns, ip, o) => ping(nsName(ns), ip, o),
    spawn(ns, cmd, args = [], o = {}) {
      alive();
      const child = spawnIn(nsName(ns), cmd, args, o);
      resources.push({ kind: 'process', child });
      return child;
    },
    destroy,
  };

  if (opts.registerCleanup ?? true) endOfFile.add(destroy);
  return topo;
}

/** A random locally administered unicast MAC. */
function randomBridgeMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * Another tool's tc filter: a BPF program that passes everything (compiled
 * here with clang), in Bastion's slot (handle 1, priority 1) of `dev`'s
 * ingress, in `netns` (or this one). For tests that Bastion leaves it alone.
 */
export function addOtherToolFilter(dev: string, netns?: string): void {
  const hadTcPins = existsSync('/sys/fs/bpf/tc');
  const dir = mkdtempSync(join(tmpdir(), 'bastion-other-tool-'));
  try {
    writeFileSync(
      join(dir, 'other.c'),
      '#include <linux/bpf.h>\n__attribute__((section("tc"), used)) int other_tool(struct __sk_buff *skb) { return -1; }\nchar _license[] __attribute__((section("license"), used)) = "GPL";\n',
    );
    execFileSync('clang', ['-O2', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', join(dir, 'other.c'), '-o', join(dir, 'other.o')]);
    const tc = ['tc', 'filter', 'add', 'dev', dev, 'ingress', 'pref', '1', 'handle', '1', 'bpf', 'da', 'obj', join(dir, 'other.o'), 'sec', 'tc'];
    const inNs = (argv: string[], o: { ignoreError?: boolean } = {}) => {
      try {
        if (netns) execFileSync('ip', ['netns', 'exec', netns, ...argv], { stdio: 'pipe' });
        else execFileSync(argv[0]!, argv.slice(1), { stdio: 'pipe' });
      } catch (err) {
        if (!o.ignoreError) throw err;
      }
    };
    inNs(['tc', 'qdisc', 'add', 'dev', dev, 'clsact'], { ignoreError: true }); // there already: fine
    inNs(tc);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    // iproute2's loader makes its pin directories (tc/globals, and ip and xdp linked to it): gone
    // again if this call made them (empty: the program has no maps)
    if (!hadTcPins) {
      for (const l of ['/sys/fs/bpf/ip', '/sys/fs/bpf/xdp']) rmSync(l, { force: true });
      for (const d of ['/sys/fs/bpf/tc/globals', '/sys/fs/bpf/tc']) {
        try {
          rmdirSync(d);
        } catch {
          // not there, or not empty: somebody else's
        }
      }
    }
  }
}
