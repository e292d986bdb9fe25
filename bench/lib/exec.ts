/**
 * Process helpers for the benchmark: bounded synchronous and asynchronous
 * runs, commands inside a network namespace (nsenter, which switches only the
 * network namespace and so costs far less than `ip netns exec`), and
 * background processes that are tracked so that every exit path can stop them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  input?: string;
  /** kill the command after this long (default 120 s) */
  timeoutMs?: number;
  /** do not throw on a non-zero exit */
  allowFail?: boolean;
  env?: NodeJS.ProcessEnv;
}

export class CommandError extends Error {
  constructor(
    readonly cmd: string[],
    readonly result: RunResult,
  ) {
    super(
      `command failed (${result.code ?? result.signal}): ${cmd.join(' ').slice(0, 300)}\n${result.stderr.trim().slice(-2000)}`,
    );
  }
}

/** argv that runs `cmd` inside the named network namespace */
export function inNs(ns: string | null, cmd: string[]): string[] {
  return ns === null ? cmd : ['nsenter', `--net=/run/netns/${ns}`, '--', ...cmd];
}

export function runSync(cmd: string[], opts: RunOptions = {}): RunResult {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd[0]!, cmd.slice(1), {
    input: opts.input,
    timeout: opts.timeoutMs ?? 120_000,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: opts.env ?? process.env,
    killSignal: 'SIGKILL',
  });
  const res: RunResult = {
    code: r.status,
    signal: r.signal,
    stdout: r.stdout ?? '',
    stderr: (r.stderr ?? '') + (r.error ? `\n${r.error.message}` : ''),
    ms: Number(process.hrtime.bigint() - t0) / 1e6,
  };
  if (!opts.allowFail && res.code !== 0) throw new CommandError(cmd, res);
  return res;
}

export function run(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    track(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${opts.timeoutMs ?? 120_000} ms)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      stderr += `\n${err.message}`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res: RunResult = { code, signal, stdout, stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
      if (!opts.allowFail && code !== 0) reject(new CommandError(cmd, res));
      else resolve(res);
    });
    child.stdin!.on('error', () => {});
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/* ------------------------------------------------------------ background */

const live = new Set<ChildProcess>();

function track(child: ChildProcess): void {
  live.add(child);
  child.on('exit', () => live.delete(child));
}

/**
 * A long-running process (server, daemon). Its output is kept in memory, or,
 * with logFile, written straight to that file (a chatty daemon then costs the
 * harness nothing) and `out` reads the file's tail.
 */
export class Background {
  readonly child: ChildProcess;
  private buf = '';
  private readonly logFd: number | null = null;
  private exited: Promise<void>;
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  running = true;

  constructor(
    readonly name: string,
    readonly cmd: string[],
    opts: { env?: NodeJS.ProcessEnv; keepOutput?: number; logFile?: string } = {},
  ) {
    const keep = opts.keepOutput ?? 1_000_000;
    if (opts.logFile) {
      this.logFd = openSync(opts.logFile, 'w+');
      this.child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', this.logFd, this.logFd], env: opts.env ?? process.env });
    } else {
      this.child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    }
    track(this.child);
    const onData = (d: string) => {
      this.buf += d;
      if (this.buf.length > keep) this.buf = this.buf.slice(-keep);
    };
    this.child.stdout?.setEncoding('utf8').on('data', onData);
    this.child.stderr?.setEncoding('utf8').on('data', onData);
    this.child.on('error', (err) => onData(`\n[spawn error] ${err.message}\n`));
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.running = false;
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      });
    });
  }

  /** the output so far (with logFile: its last 200 kB) */
  get out(): string {
    if (this.logFd === null) return this.buf;
    try {
      return readTail(this.logFd, 200_000).toString('utf8') + this.buf;
    } catch {
      return this.buf;
    }
  }

  /** close the log file (after the process has exited) */
  closeLog(): void {
    if (this.logFd !== null) {
      try {
        closeSync(this.logFd);
      } catch {
        /* closed */
      }
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** wait until the output matches, the process exits, or the time is up */
  async waitFor(re: RegExp, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (re.test(this.out)) return true;
      if (!this.running) return re.test(this.out);
      await sleep(10);
    }
    return false;
  }

  async waitExit(timeoutMs: number): Promise<boolean> {
    if (!this.running) return true;
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const r = await Promise.race([this.exited.then(() => true), t]);
    clearTimeout(timer);
    return r;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running && this.child.pid) {
      try {
        process.kill(this.child.pid, sig);
      } catch {
        /* already gone */
      }
    }
  }

  /** SIGTERM, then SIGKILL after graceMs */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    if (await this.waitExit(graceMs)) return;
    this.signal('SIGKILL');
    await this.waitExit(2000);
  }
}

/** Synchronous last-resort stop of every child still running (used on exit). */
export function killAllTrackedSync(): void {
  for (const child of live) {
    if (child.pid && child.exitCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function hrMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function which(bin: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** The last `max` bytes of an open file. */
export function readTail(fd: number, max: number): Buffer {
  const size = fstatSync(fd).size;
  const len = Math.min(size, max);
  const b = Buffer.alloc(len);
  readSync(fd, b, 0, len, size - len);
  return b;
}
