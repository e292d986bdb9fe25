/**
 * The config file as the daemon uses it: validated whole (any error rejects
 * all of it), turned into the policy set and the containers to protect.
 */
import type { EndpointSpec, NetnsRef } from '../manager/endpoint.js';
import type { Mode, PolicySet } from '../policy/model.js';
import { BUILTIN_LABELS } from '../policy/model.js';
import { configToPolicySet, parseConfigText, type PolicyConfig } from '../policy/bastion-config.js';
import { formatIssue, issueLines } from '../policy/errors.js';
import { Worker } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import { keepLargeAllocationsMapped } from './memory.js';
import { InputFileError, readInputFile } from '../policy/input-file.js';

/** Largest config file accepted unless `bastion run --max-config-size` says otherwise. */
export const DEFAULT_MAX_CONFIG_BYTES = 16 * 1024 * 1024;

export type LoadedConfig = {
  ok: true;
  policy: PolicySet;
  containers: EndpointSpec[];
  /** the file's policies as written (for listing) */
  policies: PolicyConfig[];
  defaultEndpointMode?: Mode;
  /** configDigest of the text this load read (undefined: no config file) */
  digest?: string;
};

/**
 * A load's answer. A rejected file carries the digest of what was read too
 * (undefined when nothing was: refused before reading, or the parser died):
 * accepted or rejected, that content has been judged, and the config watch
 * compares the file with it (see watchConfigFile's lastRead).
 */
export type ConfigLoad = LoadedConfig | { ok: false; errors: string[]; digest?: string };

/** sha256 (hex) of a config file's text, as a load and the config watch read it. */
export function configDigest(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

export function netnsRef(netns: string): NetnsRef {
  return netns.includes('/') ? { kind: 'path', path: netns } : { kind: 'name', name: netns };
}

/** What loading the config needs to know besides the path. */
export interface ConfigSourceOptions {
  containersRequired: boolean;
  /** largest file accepted (default DEFAULT_MAX_CONFIG_BYTES) */
  maxBytes?: number;
  /** abandons the load (a newer one replaces it): the worker is stopped and the load answers "superseded" */
  signal?: AbortSignal;
}

/**
 * The parse's heap limit follows the size limit: 64 MB of heap per MB of
 * file, at least 256 MB (1 GB for the default 16 MiB). A file that needs
 * more (YAML aliases that expand, for one) is rejected with a clear error
 * instead of taking the daemon down.
 */
export function parseHeapMbFor(maxBytes: number): number {
  return Math.max(256, Math.ceil((64 * maxBytes) / (1024 * 1024)));
}

/** Thrown when a newer load replaced this one before it finished. */
export class ConfigLoadSuperseded extends Error {
  constructor() {
    super('config load superseded by a newer one');
    this.name = 'ConfigLoadSuperseded';
  }
}

/**
 * Reads and validates the config file in a worker thread, so that the
 * daemon's API, flow events and timers keep running while a large file is
 * parsed (a 20 MB config with an error on its last line held the API for
 * 67 s), and so that the parse's garbage (the file text, the YAML library's
 * document, the validator's intermediate values: hundreds of MB for a large
 * file) lives and dies on the worker's heap: the daemon receives only the
 * result, a structured clone whose strings are its own (no view into the
 * file text) and whose shared parts (interned selectors, peers and port
 * lists) stay shared. The worker's heap is bounded; a file that needs more
 * is rejected, not an out-of-memory daemon.
 *
 * The answer is the same as loadConfigSourceHere's; an InputFileError of an
 * unreadable file is thrown again here.
 */
export function loadConfigSource(path: string | undefined, opts: ConfigSourceOptions): Promise<ConfigLoad> {
  if (!path) return Promise.resolve(emptyConfig());
  // the answer is a structured clone of tens of MB: its buffer must not leave the heap fragmented
  keepLargeAllocationsMapped();
  const heapMb = parseHeapMbFor(opts.maxBytes ?? DEFAULT_MAX_CONFIG_BYTES);
  return new Promise<ConfigLoad>((resolve, reject) => {
    if (opts.signal?.aborted) return reject(new ConfigLoadSuperseded());
    const request: ConfigWorkerRequest = { path, containersRequired: opts.containersRequired, maxBytes: opts.maxBytes };
    const worker = new Worker(new URL('./config-worker.js', import.meta.url), {
      workerData: request,
      resourceLimits: { maxOldGenerationSizeMb: heapMb, maxYoungGenerationSizeMb: 16 },
      // the worker needs none of the daemon's stdio
      stdout: true,
      stderr: true,
    });
    let settled = false;
    const done = (f: () => void) => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener('abort', onAbort);
      f();
    };
    const onAbort = () => done(() => {
      void worker.terminate();
      reject(new ConfigLoadSuperseded());
    });
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (m: ConfigWorkerAnswer) => {
      done(() => {
        if (m.kind === 'loaded') resolve(m.result.ok ? compactClone(m.result) : m.result);
        else reject(new InputFileError(m.path, m.reason, m.problem));
      });
      void worker.terminate();
    });
    worker.once('error', (err: Error & { code?: string }) => {
      done(() => {
        if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
          // no digest, the worker died with it: the watch's next look at this file reloads it (one more reload, never one less)
          const message = `refused: parsing it needed more than ${heapMb} MB (YAML aliases that expand? the limit grows with bastion run --max-config-size)`;
          resolve({ ok: false, errors: [formatIssue({ code: 'file', file: path, path: [], message })] });
        } else reject(err);
      });
    });
    worker.once('exit', (code) => done(() => reject(new Error(`the config parser stopped (exit ${code}) before answering`))));
  });
}

/**
 * The worker's answer made compact again on the daemon's heap. A structured
 * clone keeps shared objects shared but copies every string it meets and
 * builds each object a property at a time, so at 50,000 policies the
 * daemon would keep 100,000 copies of "egress"/"ingress", a copy of the
 * policy's name in each of its rules (its id), and a property array next to
 * every rule and policy (about 10 MB of heap in all,
 * bench/tools/daemon-heap.ts). Rules and policies are rebuilt as literals
 * (their fields in-object) with their names shared.
 */
export function compactClone(loaded: LoadedConfig): LoadedConfig {
  const names = new Map<string, string>();
  const policies = loaded.policies.map((p) => {
    names.set(p.name, p.name);
    // a field this function does not know of (added to PolicyConfig later) keeps the object as cloned, whole
    if (!onlyKeys(p, POLICY_KEYS)) return p;
    const { name, from, to, ports, mode } = p;
    if (ports === undefined) return mode === undefined ? { name, from, to } : { name, from, to, mode };
    return mode === undefined ? { name, from, to, ports } : { name, from, to, ports, mode };
  });
  const rules = loaded.policy.rules.map((r) =>
    onlyKeys(r, RULE_KEYS)
      ? {
          id: names.get(r.id) ?? r.id,
          subject: r.subject,
          direction: r.direction === 'egress' ? ('egress' as const) : r.direction === 'ingress' ? ('ingress' as const) : r.direction,
          peers: r.peers,
          ports: r.ports,
        }
      : r,
  );
  return { ...loaded, policy: { mode: loaded.policy.mode, rules }, policies };
}

const POLICY_KEYS = new Set(['name', 'from', 'to', 'ports', 'mode']);
const RULE_KEYS = new Set(['id', 'subject', 'direction', 'peers', 'ports']);

function onlyKeys(o: object, known: ReadonlySet<string>): boolean {
  for (const k in o) if (!known.has(k)) return false;
  return true;
}

/** What the daemon sends its config worker. */
export interface ConfigWorkerRequest {
  path: string;
  containersRequired: boolean;
  maxBytes?: number;
}

/** What the config worker answers: the load, or why the file could not be read. */
export type ConfigWorkerAnswer =
  | { kind: 'loaded'; result: ConfigLoad }
  | { kind: 'unreadable'; path: string; reason: string; problem: InputFileError['problem'] };

function emptyConfig(): LoadedConfig {
  return { ok: true, policy: { mode: 'enforce', rules: [] }, containers: [], policies: [] };
}

/**
 * Reads and validates the config file on this thread (the worker's body,
 * and tests). A file that does not validate, or is refused (not a regular
 * file of root or the invoking user, over the size limit), is `ok: false`
 * with the errors (at most a short excerpt of the file in each). A file that
 * cannot be read at all (missing, no permission) throws its InputFileError:
 * that is not a rejected config. A file read, valid or not, comes with the
 * digest of its text.
 */
export function loadConfigSourceHere(path: string | undefined, opts: Omit<ConfigSourceOptions, 'signal'>): ConfigLoad {
  if (!path) return emptyConfig();
  let text: string;
  try {
    text = readInputFile(path, { maxBytes: opts.maxBytes ?? DEFAULT_MAX_CONFIG_BYTES, limitHint: 'bastion run --max-config-size' });
  } catch (err) {
    if (err instanceof InputFileError && err.invalidInput) return { ok: false, errors: issueLines([err.issue]) };
    throw err;
  }
  // hashed where the text is read (the worker): the daemon's thread does not read or hash it again
  const digest = configDigest(text);
  const parsed = parseConfigText(text, path, { containersRequired: opts.containersRequired });
  if (!parsed.ok) return { ok: false, errors: issueLines(parsed.errors), digest };
  const config = parsed.config;
  const containers: EndpointSpec[] = (config.containers ?? []).map((c) => ({
    key: `file:${c.name}`,
    name: c.name,
    netns: netnsRef(c.netns),
    interface: c.interface ?? 'eth0',
    labels: { ...(c.labels ?? {}), [BUILTIN_LABELS.name]: c.name },
    ...(c.mode ? { mode: c.mode } : {}),
  }));
  return { ok: true, policy: configToPolicySet(config), containers, policies: config.policies, digest };
}
