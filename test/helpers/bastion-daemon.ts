/**
 * Driving `bin/bastion` from the end-to-end tests: write a config, start the
 * daemon with a unique pin path, wait for its readiness line, collect its
 * JSON log lines, rewrite the config (the daemon re-applies on change and on
 * SIGHUP), kill it, ask `status` and `down`. Plus the core lab: web, api, db
 * and attacker on one bridge, and the tc/bpffs inspection the lifecycle
 * tests need.
 *
 * Contract points this relies on (src/daemon/daemon.ts, src/cli/commands):
 * - stdout carries one JSON object per line (pino): readiness is the line
 *   whose msg is "ready"; a re-applied config logs "config applied", a
 *   rejected one "config rejected..." (and the errors on stderr); flow
 *   events carry "verdict" and "reason".
 * - status/down find the daemon from --pin-path alone.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { createTopology, freeSubnet24, type Container, type Topology } from './netns.js';
import { flushNeighbours, nsRun, startBackground, stopBackground, type Background, type RunResult } from './probes.js';
import { pinNeighbour } from './attacks.js';
import { flowHistoryDirFor, lockFileFor, modesFileFor } from '../../src/api/paths.js';
import { removeInstanceLock } from '../../src/daemon/instance.js';
import { dirname } from 'node:path';

/**
 * What a daemon of this pin path keeps outside bpffs: its flow history
 * (under the state directory), the modes set at run time and its instance
 * lock file (left in place by a daemon that stops without `down`, as a lock
 * file should be; removed here only when no process holds it). Removed when
 * the test process exits, whatever happened, for every pin path a test
 * started a daemon on.
 */
const stateToRemove = new Set<string>();
function removeStateAtExit(pinPath: string): void {
  if (stateToRemove.size === 0) process.once('exit', removeDaemonState);
  stateToRemove.add(pinPath);
}
export function removeDaemonState(): void {
  for (const pin of stateToRemove) {
    rmSync(dirname(flowHistoryDirFor(pin)), { recursive: true, force: true });
    rmSync(modesFileFor(pin), { force: true });
    removeInstanceLock(lockFileFor(pin));
  }
  stateToRemove.clear();
}
import { DAEMON_CAPABILITIES, setprivCapList } from '../../src/daemon/capabilities.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BASTION_BIN = join(REPO_ROOT, 'bin', 'bastion');

// -------------------------------------------------------------------- config

export type Selector = Record<string, string> | 'host' | { cidr: string; except?: string[] };

export interface ContainerEntry {
  name: string;
  netns: string;
  interface?: string;
  labels?: Record<string, string>;
}

export interface PolicyEntry {
  name: string;
  from: Selector;
  to: Selector;
  ports?: string[];
}

export interface BastionConfig {
  mode?: 'enforce' | 'audit';
  containers: ContainerEntry[];
  policies?: PolicyEntry[];
}

export function configText(cfg: BastionConfig): string {
  return YAML.stringify(cfg);
}

/** Writes the file in one step (temp file + rename in the same directory), so a watcher never reads half of it. */
export function writeConfigFile(path: string, content: BastionConfig | string): void {
  const text = typeof content === 'string' ? content : configText(content);
  const tmp = `${path}.tmp-${randomBytes(3).toString('hex')}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** A unique pin path: /sys/fs/bpf/bastion-t<hex>. */
export function uniquePinPath(): string {
  return `/sys/fs/bpf/bastion-t${randomBytes(4).toString('hex')}`;
}

// ----------------------------------------------------------------- commands

/**
 * A daemon command line under `setpriv`, with the capability bounding,
 * inheritable and ambient sets reduced to what the daemon needs
 * (src/daemon/capabilities.ts) for its mode, root's special treatment of
 * uid 0 on exec turned off and no_new_privs set: what the systemd unit
 * (contrib/systemd/bastion.service) gives it.
 * BASTION_TEST_FULL_CAPS=1 runs it with all of root's (to tell a missing
 * capability from a bug).
 */
export function leastPrivilege(bin: string, argv: string[]): [string, string[]] {
  if (process.env.BASTION_TEST_FULL_CAPS === '1') return [bin, argv];
  // CAP_SYS_PTRACE too: some tests give a namespace as /proc/PID/ns/net (what Docker always does)
  const caps = setprivCapList(DAEMON_CAPABILITIES);
  return ['setpriv', ['--securebits=+noroot,+noroot_locked', '--no-new-privs', `--bounding-set=-all,${caps}`, `--inh-caps=-all,${caps}`, `--ambient-caps=-all,${caps}`, bin, ...argv]];
}

/** Runs `bin/bastion ARGS` to completion (bounded). */
export function bastion(args: string[], timeoutMs = 30_000): Promise<RunResult> {
  // a `run` started here (often one that is meant to be refused) may leave
  // state outside bpffs too: removed at exit like a BastionDaemon's
  const pin = args[0] === 'run' ? args[args.indexOf('--pin-path') + 1] : undefined;
  if (pin && args.includes('--pin-path')) removeStateAtExit(pin);
  return nsRun(null, BASTION_BIN, args, { timeoutMs });
}

export async function bastionStatus(pinPath: string): Promise<{ code: number | null; json: any; raw: RunResult }> {
  const r = await bastion(['status', '--json', '--pin-path', pinPath], 15_000);
  let json: any;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { code: r.code, json, raw: r };
}

/** The daemon's Prometheus metrics text (GET /metrics on its socket). */
export async function bastionMetrics(pinPath: string): Promise<string> {
  const { request } = await import('node:http');
  const socketPath = `${process.env.BASTION_RUN_DIR ?? '/run/bastion'}/${pinPath.split('/').pop()}.sock`;
  return new Promise((resolve, reject) => {
    request({ socketPath, path: '/metrics' }, (res) => {
      let t = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (t += d));
      res.on('end', () => resolve(t));
    })
      .on('error', reject)
      .end();
  });
}

export function bastionDown(pinPath: string): Promise<RunResult> {
  return bastion(['down', '--pin-path', pinPath], 30_000);
}

// ------------------------------------------------------------------- daemon

export type LogRecord = Record<string, any>;

/** Does a log record mention every needle anywhere (container names, addresses; numbers as whole numbers, e.g. ports)? */
export function recordMentions(r: LogRecord, ...needles: Array<string | number>): boolean {
  const s = JSON.stringify(r);
  return needles.every((n) => (typeof n === 'number' ? new RegExp(`(^|[^0-9])${n}([^0-9]|$)`).test(s) : s.includes(n)));
}

export class BastionDaemon {
  private bg?: Background;
  /** every stdout line, in order */
  readonly lines: string[] = [];
  /** the parsed JSON lines (others are kept in `lines` only) */
  readonly records: LogRecord[] = [];
  private pending = '';
  private waiters: Array<() => void> = [];
  /**
   * false: flow lines are counted (flowLines) but neither parsed nor kept.
   * For floods: hundreds of thousands of lines would cost the test process
   * more CPU and memory than the daemon it watches.
   */
  keepFlowLines = true;
  flowLines = 0;
  /** more environment for the daemon (e.g. DOCKER_HOST for an engine of its own); set before start() */
  env: Record<string, string> = {};

  constructor(
    readonly configPath: string,
    readonly pinPath: string,
    readonly extraArgs: string[] = [],
    /** run inside this network namespace (nsenter --net: the mount namespace, and with it the real bpffs, stays the host's) */
    readonly hostNetns?: string,
  ) {}

  get pid(): number | undefined {
    return this.bg?.child.pid;
  }
  get stderr(): string {
    return this.bg?.stderr ?? '';
  }
  get running(): boolean {
    return this.bg?.running ?? false;
  }
  get exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.bg) throw new Error('daemon not started');
    return this.bg.exited;
  }

  /**
   * Starts `bastion run`; does not wait for readiness (see waitReady). The
   * daemon runs with only the capabilities it needs (leastPrivilege), so
   * every test that uses it also proves that set is enough.
   */
  start(): this {
    removeStateAtExit(this.pinPath);
    const argv = ['run', '--config', this.configPath, '--pin-path', this.pinPath, ...this.extraArgs];
    const [privCmd, privArgs] = leastPrivilege(BASTION_BIN, argv);
    const vars = Object.entries(this.env).map(([k, v]) => `${k}=${v}`);
    const [cmd, args] = vars.length ? ['env', [...vars, privCmd, ...privArgs]] : [privCmd, privArgs];
    this.bg = this.hostNetns
      ? startBackground(null, 'nsenter', [`--net=/run/netns/${this.hostNetns}`, '--', cmd, ...args])
      : startBackground(null, cmd, args);
    this.bg.child.stdout!.on('data', (d: string) => this.onData(d));
    void this.bg.exited.then(() => this.wake());
    return this;
  }

  private onData(d: string): void {
    this.pending += d;
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, nl);
      this.pending = this.pending.slice(nl + 1);
      if (!this.keepFlowLines && line.includes('"msg":"flow"')) {
        this.flowLines++;
        continue;
      }
      this.lines.push(line);
      const t = line.trim();
      if (t.startsWith('{')) {
        try {
          this.records.push(JSON.parse(t) as LogRecord);
        } catch {
          /* not JSON after all */
        }
      }
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves with the first record from index `from` on that matches, or undefined after timeoutMs (or when the daemon exits). */
  async waitForRecord(pred: (r: LogRecord) => boolean, timeoutMs: number, from = 0): Promise<LogRecord | undefined> {
    const end = Date.now() + timeoutMs;
    let i = from;
    for (;;) {
      for (; i < this.records.length; i++) if (pred(this.records[i]!)) return this.records[i];
      if (!this.running || Date.now() >= end) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(0, end - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits for the readiness line; throws with the daemon's output if it exits or times out first. */
  async waitReady(timeoutMs = 30_000): Promise<LogRecord> {
    const r = await this.waitForRecord((x) => typeof x.msg === 'string' && /^ready\b/i.test(x.msg), timeoutMs);
    if (!r) throw new Error(`bastion run did not become ready within ${timeoutMs} ms (${this.running ? 'still running' : 'exited'})\n${this.describe()}`);
    return r;
  }

  /** The daemon's output, for assertion messages. */
  describe(tail = 40): string {
    return `--- stdout (last ${tail} lines)\n${this.lines.slice(-tail).join('\n')}\n--- stderr\n${this.stderr.slice(-4000)}`;
  }

  /** Flow records (lines with a verdict), from index `from` of `records`. */
  flows(from = 0): LogRecord[] {
    return this.records.slice(from).filter((r) => 'verdict' in r);
  }

  /** A mark in the log: pass it as `from` to look only at what comes later. */
  mark(): number {
    return this.records.length;
  }

  /**
   * Rewrites the config file and waits for the daemon to say it applied it
   * ("config applied") or rejected it; returns the record and how long it took.
   */
  async rewriteConfig(content: BastionConfig | string, timeoutMs = 10_000): Promise<{ applied: boolean; record?: LogRecord; ms: number }> {
    const from = this.mark();
    const t0 = Date.now();
    writeConfigFile(this.configPath, content);
    const record = await this.waitForRecord((r) => typeof r.msg === 'string' && /config (applied|rejected)/i.test(r.msg), timeoutMs, from);
    return { applied: !!record && /applied/i.test(record.msg), record, ms: Date.now() - t0 };
  }

  sighup(): void {
    this.signal('SIGHUP');
  }

  signal(sig: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid === undefined) throw new Error('daemon not started');
    process.kill(pid, sig);
  }

  /** kill -9: the daemon gets no chance to clean anything up. */
  async kill9(): Promise<void> {
    if (!this.running) return;
    this.signal('SIGKILL');
    await this.exited;
  }

  /** SIGTERM, then SIGKILL if it lingers. */
  async stop(): Promise<void> {
    await this.bg?.stop('SIGTERM');
  }
}

// ------------------------------------------------------- datapath inspection

export interface TcFilter {
  line: string;
  /** the BPF program name when tc shows one */
  name?: string;
}

/** BPF filters on a device's clsact hook (tc filter show dev X ingress|egress). */
export async function tcBpfFilters(dev: string, dir: 'ingress' | 'egress'): Promise<TcFilter[]> {
  const r = await nsRun(null, 'tc', ['filter', 'show', 'dev', dev, dir], { timeoutMs: 5000 });
  return r.stdout
    .split('\n')
    .filter((l) => /\bbpf\b/.test(l) && /handle/.test(l))
    .map((line) => ({ line: line.trim(), name: /\bname (\S+)/.exec(line)?.[1] ?? /handle \S+ (\S+)\s+direct-action/.exec(line)?.[1] }));
}

export async function hasClsact(dev: string): Promise<boolean> {
  const r = await nsRun(null, 'tc', ['qdisc', 'show', 'dev', dev], { timeoutMs: 5000 });
  return /\bclsact\b/.test(r.stdout);
}

/** Every file under a bpffs directory (empty when it does not exist). */
export function pinsUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      out.push(p);
      if (statSync(p).isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

// ------------------------------------------------------------------ core lab

export const CORE_CONTAINERS = ['web', 'api', 'db', 'attacker'] as const;
export type CoreName = (typeof CORE_CONTAINERS)[number];

export const WEB_TO_API: PolicyEntry = { name: 'web-to-api', from: { app: 'web' }, to: { app: 'api' }, ports: ['8080/tcp'] };
export const API_TO_DB: PolicyEntry = { name: 'api-to-db', from: { app: 'api' }, to: { app: 'db' }, ports: ['5432/tcp'] };

/**
 * The core issue's topology: web, api, db and attacker, each a namespace
 * with eth0 on a veth to one bridge whose address is the gateway; a config
 * file in a temp dir and a unique pin path. cleanup() stops the daemons it
 * started, runs `bastion down`, kills the probes' background processes,
 * removes the topology, the pins and the temp dir, and keeps going past
 * failures.
 */
export class CoreLab {
  readonly daemons: BastionDaemon[] = [];
  private constructor(
    readonly topo: Topology,
    readonly dir: string,
    readonly configPath: string,
    readonly pinPath: string,
  ) {}

  static async create(): Promise<CoreLab> {
    const base = await freeSubnet24();
    const topo = await createTopology({
      bridgeIp: `${base}.1/24`,
      containers: CORE_CONTAINERS.map((name, i) => ({ name, ip: `${base}.${10 + i}` })),
      registerCleanup: false,
    });
    const dir = mkdtempSync(join(tmpdir(), 'bastion-core-'));
    const lab = new CoreLab(topo, dir, join(dir, 'bastion.yaml'), uniquePinPath());
    // If the test process ends without cleanup() (a crash), still take our files away;
    // the topology helper removes the namespaces and links, and with them the attachments.
    const onExit = () => {
      for (const p of [lab.pinPath, lab.dir]) rmSync(p, { recursive: true, force: true });
    };
    process.once('exit', onExit);
    lab.removeExitHook = () => process.off('exit', onExit);
    return lab;
  }

  private removeExitHook = (): void => undefined;

  c(name: CoreName): Container {
    return this.topo.container(name);
  }
  get web(): Container {
    return this.c('web');
  }
  get api(): Container {
    return this.c('api');
  }
  get db(): Container {
    return this.c('db');
  }
  get attacker(): Container {
    return this.c('attacker');
  }
  get gateway(): string {
    return this.topo.bridgeIp;
  }
  /** The /28 of the test subnet that holds the gateway (.1) and the containers (.10-.13): what the ARP scans cover. */
  get scanCidr(): string {
    return `${this.topo.bridgeIp.split('.').slice(0, 3).join('.')}.0/28`;
  }

  /**
   * The containers section: every core container, labelled app=<name>. web
   * and db name their interface; api and attacker rely on the default (eth0).
   */
  containersSection(): ContainerEntry[] {
    return CORE_CONTAINERS.map((name) => ({
      name,
      netns: this.c(name).netns,
      ...(name === 'web' || name === 'db' ? { interface: 'eth0' } : {}),
      labels: { app: name },
    }));
  }

  /** The core config: web→api 8080/tcp, api→db 5432/tcp, plus `extra`. */
  config(o: { mode?: 'enforce' | 'audit'; extra?: PolicyEntry[]; policies?: PolicyEntry[] } = {}): BastionConfig {
    return { mode: o.mode ?? 'enforce', containers: this.containersSection(), policies: o.policies ?? [WEB_TO_API, API_TO_DB, ...(o.extra ?? [])] };
  }

  /** Writes the config (unless cfg is null: keep the file) and starts a daemon on it (with `extraArgs` for `run`), waiting until it is ready. */
  async startDaemon(cfg: BastionConfig | string | null = this.config(), extraArgs: string[] = []): Promise<BastionDaemon> {
    if (cfg !== null) writeConfigFile(this.configPath, cfg);
    const d = new BastionDaemon(this.configPath, this.pinPath, extraArgs).start();
    this.daemons.push(d);
    await d.waitReady();
    this.ready = d;
    return d;
  }

  private ready?: BastionDaemon;

  /**
   * The last daemon that became ready. Tests that need enforcement call this
   * first, so that a daemon that never started fails them with its own
   * output instead of with misleading "connection accepted" messages.
   */
  requireDaemon(): BastionDaemon {
    const last = this.daemons[this.daemons.length - 1];
    if (!this.ready || this.ready !== last) {
      throw new Error(`no Bastion daemon became ready, nothing to test (its output is in the failure of the test that started it)`);
    }
    return this.ready;
  }

  /** Runs `bastion run` on a config expected to be rejected; bounded; returns its exit and output. */
  async runExpectingFailure(configPath: string, pinPath: string, timeoutMs = 20_000): Promise<RunResult> {
    return bastion(['run', '--config', configPath, '--pin-path', pinPath], timeoutMs);
  }

  /**
   * Static ARP entries (the true MACs) in each container of `who` for every
   * other core container and the gateway. With them a refused connection
   * proves the IP policy refused it, not merely that ARP went unanswered.
   */
  async pinNeighbours(who: readonly CoreName[] = CORE_CONTAINERS): Promise<void> {
    for (const name of who) {
      const c = this.c(name);
      await pinNeighbour(c.netns, 'eth0', this.gateway, this.topo.bridgeMac);
      for (const other of CORE_CONTAINERS) if (other !== name) await pinNeighbour(c.netns, 'eth0', this.c(other).ip, this.c(other).mac);
    }
  }

  /** Empties the containers' neighbour tables (static entries too), so the next packets go through ARP again. */
  async flushNeighbours(who: readonly CoreName[] = CORE_CONTAINERS): Promise<void> {
    await Promise.all(who.map((n) => flushNeighbours(this.c(n).netns)));
  }

  hostIfs(): string[] {
    return this.topo.containers.map((c) => c.hostIf);
  }

  async cleanup(): Promise<void> {
    const problems: string[] = [];
    for (const d of this.daemons) await d.stop().catch((e) => problems.push(String(e)));
    const down = await bastionDown(this.pinPath);
    if (down.code !== 0 && existsSync(this.pinPath)) problems.push(`bastion down: exit ${down.code} ${down.stderr}`);
    await stopBackground();
    // Whatever `down` missed: our programs on our veths, our pins.
    for (const dev of this.hostIfs()) await nsRun(null, 'tc', ['qdisc', 'del', 'dev', dev, 'clsact'], { timeoutMs: 5000 });
    try {
      rmSync(this.pinPath, { recursive: true, force: true });
    } catch (e) {
      problems.push(`rm ${this.pinPath}: ${String(e)}`);
    }
    for (const f of ['sock', 'pid', 'modes.json']) rmSync(`/run/bastion/${this.pinPath.split('/').pop()}.${f}`, { force: true });
    rmSync(dirname(flowHistoryDirFor(this.pinPath)), { recursive: true, force: true });
    await this.topo.destroy().catch((e) => problems.push(String(e)));
    rmSync(this.dir, { recursive: true, force: true });
    this.removeExitHook();
    if (problems.length) console.error(`core lab cleanup: ${problems.join('\n')}`);
  }

  /** Every BPF filter on the lab's host veths, one line each ("dev dir: tc line"); empty when Bastion attached nothing. */
  async bpfFilters(): Promise<string[]> {
    const found: string[] = [];
    for (const dev of this.hostIfs()) {
      for (const dir of ['ingress', 'egress'] as const) for (const f of await tcBpfFilters(dev, dir)) found.push(`${dev} ${dir}: ${f.line}`);
    }
    return found;
  }
}
