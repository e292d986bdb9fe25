/**
 * Bastion's own configuration file (YAML): containers to protect (optional
 * when a platform such as Docker supplies them) and policies between them.
 *
 *   mode: enforce                # or audit
 *   containers:
 *     - name: web
 *       netns: web               # a name under /run/netns, or a path (/proc/1234/ns/net)
 *       interface: eth0          # default eth0
 *       labels: { app: web }
 *       mode: audit              # optional per-container override
 *   policies:
 *     - name: web-to-api
 *       from: { app: web }       # a label selector, host, or { cidr: ..., except: [...] }
 *       to: { app: api }         # a label selector, host, or { cidr: ..., except: [...] }
 *       ports: [ "8080/tcp", "9000-9010/udp", "icmp" ]   # omitted: every protocol and port
 *
 * Validation is complete (every error, not just the first; unknown fields
 * rejected) and every error names the file, the field and the object:
 *   config.yaml: policies[1] (web-to-api).ports[0]: "80/tcpx" is not a port: ...
 * Decisions the format leaves open are in docs/policy.md.
 *
 * Everything here is pure except loadConfigFile, which only reads the file.
 */
import { DEFAULT_INPUT_MAX_BYTES, InputFileError, readInputFile } from './input-file.js';
import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument, type Node as YamlNode } from 'yaml';
import { CORE_SCHEMA, load as loadYaml } from 'js-yaml';
import { readJsonDocument } from './json-document.js';
import { z } from 'zod';
import type { LabelSelector, Mode, Peer, PolicySet, PortRange, Rule } from './model.js';
import { BUILTIN_LABELS } from './model.js';
import { EXCERPT_MAX, closest, describeValue, isPlainObject, quote, unknownFieldMessage, unknownFields, yamlErrorLine, type Issue, type IssueCode, type Path } from './errors.js';
import { LabelIndex, formatSelector, parseSelector, validateLabels } from './selector.js';
import { parsePortSpec } from './ports.js';
import { canonicalPeer } from './compile.js';
import { cidr4Covers, formatCidr4, isIpv6Text, parseCidr4, parseIpv4 } from '../net/ip.js';

// ================================================================= types

export interface ContainerConfig {
  name: string;
  /** a name under /run/netns, or an absolute path */
  netns: string;
  /** container-side interface, default eth0 */
  interface: string;
  /** the user's labels (without the built-in ones; see containerLabels) */
  labels: Record<string, string>;
  mode?: Mode;
}

/** One end of a policy. */
export type PolicyEnd =
  | { kind: 'host' }
  | { kind: 'endpoints'; selector: LabelSelector }
  | { kind: 'cidr'; cidr: string; except?: string[] };

export interface PolicyConfig {
  name: string;
  from: PolicyEnd;
  to: PolicyEnd;
  /** undefined: every protocol and port */
  ports?: PortRange[];
  /**
   * audit: the containers this policy selects (either end) run in audit
   * mode (what they would drop is let through and reported as AUDIT),
   * unless the container's own mode says otherwise; see docs/learning.md
   */
  mode?: Mode;
}

export interface BastionConfig {
  mode: Mode;
  /** undefined when the file lists none (a platform supplies them) */
  containers?: ContainerConfig[];
  policies: PolicyConfig[];
}

export type ConfigParseResult = { ok: true; config: BastionConfig } | { ok: false; errors: Issue[] };

export interface ParseOptions {
  /** no platform supplies containers: the file must list them */
  containersRequired?: boolean;
  /**
   * a policies document (`bastion policy add -f`, POST /v1/policies): only
   * `policies:`; mode and containers belong in the config file
   */
  policiesOnly?: boolean;
}

export const RESERVED_LABEL_PREFIX = 'bastion.io/';

const ROOT_FIELDS = ['mode', 'containers', 'policies'];
const CONTAINER_FIELDS = ['name', 'netns', 'interface', 'labels', 'mode'];
const POLICY_FIELDS = ['name', 'from', 'to', 'ports', 'mode', 'evidence'];
const CIDR_FIELDS = ['cidr', 'except'];

// ============================================================== schemas

type Seg = string | number;

/**
 * Where a refinement reports its issues (zod's context), counting them. Our
 * code rides in zod's params and comes back out in Collector.zod.
 */
class Sink {
  n = 0;
  constructor(private readonly ctx: { addIssue(i: { code: 'custom'; message: string; path: Seg[]; params: { code: IssueCode } }): void }) {}
  add(message: string, path: Path = [], code: IssueCode = 'invalid-value'): void {
    this.n++;
    this.ctx.addIssue({ code: 'custom', message, path: path.map((x) => (typeof x === 'object' ? x.key : x)), params: { code } });
  }
}
type Ctx = Sink;

function issue(ctx: Ctx, message: string, path: Path = [], code?: IssueCode): void {
  ctx.add(message, path, code);
}

const OBJECT_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** A container's or policy's name: OBJECT_NAME, at most `max` characters. */
const objectName = (max: number) =>
  z.string().superRefine((v, zctx) => {
    const ctx = new Sink(zctx);
    if (v.length === 0) issue(ctx, 'must not be empty');
    else if (v.length > max) issue(ctx, `must be no more than ${max} characters (is ${v.length})`);
    else if (!OBJECT_NAME.test(v))
      issue(ctx, `${quote(v)} is not a valid name: use letters, digits, '-', '_' or '.', starting and ending with a letter or digit`);
  });
const containerName = objectName(63);
const policyName = objectName(253);

const netnsField = z.string().superRefine((v, zctx) => {
  const ctx = new Sink(zctx);
  if (v.length === 0) issue(ctx, 'must not be empty');
  else if (v.includes('\0')) issue(ctx, 'must not contain NUL');
  else if (v.includes('/')) {
    if (!v.startsWith('/')) issue(ctx, `${quote(v)} is neither a name under /run/netns nor an absolute path`);
  } else if (v === '.' || v === '..' || /\s/.test(v) || v.length > 255) {
    issue(ctx, `${quote(v)} is not a valid network namespace name`);
  }
});

const interfaceField = z.string().superRefine((v, zctx) => {
  const ctx = new Sink(zctx);
  if (v.length === 0 || v.length > 15 || v === '.' || v === '..' || /[/:\s]/.test(v))
    issue(ctx, `${quote(v)} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)`);
});

const labelsField = z.record(z.string(), z.unknown()).superRefine((labels, zctx) => {
  const ctx = new Sink(zctx);
  report(ctx, validateLabels(labels));
  for (const k of Object.keys(labels))
    if (k.startsWith(RESERVED_LABEL_PREFIX)) issue(ctx, `label keys under ${quote(RESERVED_LABEL_PREFIX)} are reserved for Bastion`, [k], 'not-allowed');
});

const containerSchema = z.strictObject({
  name: containerName,
  netns: netnsField,
  interface: interfaceField.optional(),
  labels: labelsField.optional(),
  mode: z.enum(['enforce', 'audit']).optional(),
});

const describe = describeValue;

/** Reports issues found by a validator of another module (paths relative to the field being refined). */
function report(ctx: Ctx, issues: readonly Issue[]): void {
  for (const i of issues) issue(ctx, i.message, i.path, i.code);
}

/** Parses a CIDR text of the file: IPv4 only, no host bits set (a bare address is a /32). */
function cidrText(ctx: Ctx, v: unknown, path: Seg[]): string | undefined {
  if (typeof v !== 'string') {
    issue(ctx, `expected a CIDR such as "10.0.0.0/8", got ${describe(v)}`, path, 'invalid-type');
    return undefined;
  }
  if (isIpv6Text(v)) {
    issue(ctx, `${quote(v)}: IPv6 is not supported (Bastion protects IPv4 container networks)`, path, 'not-allowed');
    return undefined;
  }
  const c = parseCidr4(v);
  if (!c) {
    issue(ctx, `${quote(v)} is not an IPv4 CIDR such as "10.0.0.0/8"`, path);
    return undefined;
  }
  const slash = v.indexOf('/');
  const ip = parseIpv4(slash < 0 ? v : v.slice(0, slash))!;
  if (ip !== c.base) {
    issue(ctx, `${quote(v)} has host bits set: did you mean ${quote(formatCidr4(c))}?`, path);
    return undefined;
  }
  return formatCidr4(c);
}

function policyEnd(containerNames: ReadonlySet<string>) {
  return z.unknown().transform((v, zctx): PolicyEnd => {
    const ctx = new Sink(zctx);
    const fail = (m: string, code: IssueCode = 'invalid-value'): PolicyEnd => {
      issue(ctx, m, [], code);
      return { kind: 'host' };
    };
    const expected = 'expected a label selector such as { app: web }, the word host, or { cidr: 10.0.0.0/8 }';
    if (v === undefined) return fail(`required: ${expected}`, 'required');
    if (typeof v === 'string') {
      if (v === 'host') return { kind: 'host' };
      if (containerNames.has(v)) {
        // the hint repeats the name only when it is short enough to show whole (an error quotes at most an excerpt of the input)
        if ([...v].length > EXCERPT_MAX) return fail(`${quote(v)} is not a peer: to select that container, write { ${BUILTIN_LABELS.name}: <its name> }`);
        return fail(`${quote(v)} is not a peer: to select the container ${v}, write { ${BUILTIN_LABELS.name}: ${v} }`);
      }
      return fail(`${quote(v)} is not a peer: ${expected}${v === 'any' || v === 'world' ? ` (everything outside is { cidr: 0.0.0.0/0 })` : ''}`);
    }
    if (!isPlainObject(v)) return fail(`${expected}, got ${describe(v)}`, 'invalid-type');
    if (Object.hasOwn(v, 'cidr')) {
      report(ctx, unknownFields(v, CIDR_FIELDS));
      const cidr = cidrText(ctx, v.cidr, ['cidr']);
      const except: string[] = [];
      if (v.except !== undefined) {
        if (!Array.isArray(v.except)) issue(ctx, `expected a list of CIDRs, got ${describe(v.except)}`, ['except'], 'invalid-type');
        else
          v.except.forEach((e, i) => {
            const c = cidrText(ctx, e, ['except', i]);
            if (c === undefined || cidr === undefined) return;
            const outer = parseCidr4(cidr)!;
            const inner = parseCidr4(c)!;
            if (!cidr4Covers(outer, inner) || inner.prefixLen === outer.prefixLen)
              issue(ctx, `${quote(c)} is not strictly inside ${cidr}`, ['except', i]);
            else if (except.includes(c)) issue(ctx, `${quote(c)} is listed twice`, ['except', i], 'duplicate');
            else except.push(c);
          });
      }
      if (ctx.n > 0) return { kind: 'host' };
      return { kind: 'cidr', cidr: cidr!, ...(except.length ? { except } : {}) };
    }
    const r = parseSelector(v);
    if (!r.ok) {
      report(ctx, r.issues);
      return { kind: 'host' };
    }
    return { kind: 'endpoints', selector: r.selector };
  });
}

const portsField = z.unknown().transform((v, zctx): PortRange[] | undefined => {
  const ctx = new Sink(zctx);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) {
    issue(ctx, `expected a list of ports such as [ "8080/tcp", "53/udp", "icmp" ], got ${describe(v)}`, [], 'invalid-type');
    return undefined;
  }
  if (v.length === 0) {
    issue(ctx, 'an empty list: omit "ports" to allow every protocol and port, or list the ports');
    return undefined;
  }
  const out: PortRange[] = [];
  const seen = new Set<string>();
  v.forEach((spec, i) => {
    const r = parsePortSpec(spec);
    if (!r.ok) issue(ctx, r.message, [i]);
    else {
      const k = `${r.port.protocol}:${r.port.from}:${r.port.to}`;
      if (!seen.has(k)) out.push(r.port);
      seen.add(k);
    }
  });
  return out;
});

/** The schema for documents without containers (runtime policies): built once, not per request. */
let noContainersSchema: ReturnType<typeof policySchema> | undefined;
function policiesOnlySchema(): ReturnType<typeof policySchema> {
  return (noContainersSchema ??= policySchema(new Set()));
}

function policySchema(containerNames: ReadonlySet<string>) {
  return z.strictObject({
    name: policyName,
    from: policyEnd(containerNames),
    to: policyEnd(containerNames),
    ports: portsField.optional(),
    mode: z.enum(['enforce', 'audit']).optional(),
    /** what `bastion learn` saw (accepted and ignored: it documents the policy, it does not change it) */
    evidence: z
      .strictObject({
        flows: z.number().int().min(0).optional(),
        firstSeen: z.string().optional(),
        lastSeen: z.string().optional(),
      })
      .optional(),
  });
}

const rootSchema = z.strictObject({
  mode: z.enum(['enforce', 'audit']).optional(),
  containers: z.array(z.unknown()).optional(),
  policies: z.array(z.unknown()).optional(),
});

// ============================================================= parsing

class Collector {
  readonly errors: Issue[] = [];
  constructor(
    private readonly file: string,
    private readonly raw: unknown,
    private readonly lineOf: (segs: Seg[]) => number | undefined,
  ) {}

  /** `at`: where the line is taken from, when it is not the field itself (an unknown key) */
  add(code: IssueCode, segs: Seg[], message: string, at: Seg[] = segs): void {
    const object = this.objectOf(segs);
    const line = this.lineOf(at);
    this.errors.push({
      code,
      file: this.file,
      path: segs,
      ...(object !== undefined ? { object: { name: object, at: 2 } } : {}),
      ...(line !== undefined ? { line } : {}),
      message,
    });
  }

  private objectOf(segs: Seg[]): string | undefined {
    if (segs.length < 2 || (segs[0] !== 'containers' && segs[0] !== 'policies') || typeof segs[1] !== 'number') return undefined;
    const list = isPlainObject(this.raw) ? this.raw[segs[0]] : undefined;
    const item = Array.isArray(list) ? list[segs[1]] : undefined;
    const name = isPlainObject(item) ? item.name : undefined;
    // the name as written, which may be long and invalid: an excerpt at most
    return typeof name === 'string' && name !== '' ? quote(name).slice(1, -1) : undefined;
  }

  zod(base: Seg[], err: z.ZodError, value: unknown, known: readonly string[]): void {
    for (const i of err.issues) {
      const segs = [...base, ...(i.path as Seg[])];
      switch (i.code) {
        case 'unrecognized_keys':
          for (const k of i.keys) this.add('unknown-field', segs, unknownFieldMessage(k, known), [...segs, k]);
          break;
        case 'invalid_type': {
          const actual = valueAt(value, i.path as Seg[]);
          if (actual === undefined) this.add('required', segs, 'required');
          else this.add('invalid-type', segs, `expected ${article(i.expected)}, got ${describe(actual)}`);
          break;
        }
        case 'invalid_value':
          {
          const v = valueAt(value, i.path as Seg[]);
          this.add('invalid-value', segs, `${typeof v === 'string' ? quote(v) : describe(v)} is not one of: ${i.values.map(String).join(', ')}`);
          }
          break;
        case 'custom':
          this.add((i.params as { code?: IssueCode } | undefined)?.code ?? 'invalid-value', segs, i.message);
          break;
        default:
          this.add('invalid-value', segs, i.message);
      }
    }
  }
}

function article(t: string): string {
  if (t === 'array') return 'a list';
  if (t === 'object' || t === 'record') return 'a mapping';
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

function valueAt(v: unknown, segs: readonly Seg[]): unknown {
  let cur = v;
  for (const s of segs) {
    if (Array.isArray(cur) && typeof s === 'number') cur = cur[s];
    else if (isPlainObject(cur) && typeof s === 'string' && Object.hasOwn(cur, s)) cur = cur[s];
    else return undefined;
  }
  return cur;
}

/** A container's labels as an endpoint carries them: the user's, plus bastion.io/name. */
export function containerLabels(c: { name: string; labels?: Record<string, string> }): Record<string, string> {
  return { ...(c.labels ?? {}), [BUILTIN_LABELS.name]: c.name };
}

/**
 * Parses and validates the text of a config file. `fileName` is only used
 * in the errors. Collects every error.
 */
export function parseConfigText(text: string, fileName: string, opts: ParseOptions = {}): ConfigParseResult {
  // The fast path: js-yaml builds the plain value of a large file about ten
  // times faster, and in a fraction of the memory, of the yaml library's
  // document model (5,000 containers and 50,000 policies, in the daemon's
  // parser thread: 5 s and a 275 MB peak against 15 s and 840 MB). The
  // document model is only needed for line numbers in errors, and for
  // syntax errors: any error falls back to the full path below, which
  // reports every error with its line, unless the file is large (a 20 MB
  // file with an error on its last line took 67 s and 3.3 GB there): then
  // the errors name the path and object without a line, and a syntax error
  // gives js-yaml's line.
  //
  // Anchors and aliases take the fast path too (a regex used to send them
  // to the full path, to bound their expansion). js-yaml makes an alias a
  // second reference to the same value, and a document that validates has
  // no deep structure to repeat (every field is a scalar, a list of
  // scalars or a flat mapping), so what validates is proportional to the
  // text; what does not validate is re-read by the full path (its
  // maxAliasCount), or, for a large file, bounded by the parser thread's
  // heap limit.
  {
    let fast: unknown;
    let syntax: { reason: string; line?: number; column?: number } | undefined;
    try {
      // JSON (what the API receives) without a YAML parser; anything else, and JSON with a key given twice, as YAML
      const json = readJsonDocument(text);
      fast = json.ok ? json.value : loadYaml(text, { schema: CORE_SCHEMA });
    } catch (err) {
      const e = err as { reason?: string; message: string; mark?: { line: number; column: number } };
      syntax = { reason: e.reason ?? yamlErrorLine(e.message), ...(e.mark ? { line: e.mark.line + 1, column: e.mark.column + 1 } : {}) };
    }
    const large = text.length > FULL_PATH_MAX_CHARS;
    if (!syntax) {
      const r = validateConfig(fast ?? {}, fileName, opts, () => undefined);
      if (r.ok || large) return r;
    } else if (large) {
      return {
        ok: false,
        errors: [{ code: 'syntax', file: fileName, path: [], ...(syntax.line ? { line: syntax.line } : {}), message: `YAML syntax error: ${syntax.reason}${syntax.column ? ` (column ${syntax.column})` : ''}` }],
      };
    }
  }
  return parseConfigTextFully(text, fileName, opts);
}

/**
 * Above this size an invalid file's errors come from the fast path (no line
 * numbers for field errors): the full path costs about 150 times the file in
 * memory and seconds per MB.
 */
export const FULL_PATH_MAX_CHARS = 1024 * 1024;

/** The full path: the yaml library's document model, for errors with their lines (exported for tests). */
export function parseConfigTextFully(text: string, fileName: string, opts: ParseOptions): ConfigParseResult {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      errors: doc.errors.map((e) => {
        const line = e.linePos?.[0]?.line;
        const col = e.linePos?.[0]?.col;
        const msg = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
        return {
          code: 'syntax' as const,
          file: fileName,
          path: [],
          ...(line !== undefined ? { line } : {}),
          message: `YAML syntax error: ${msg}${col !== undefined ? ` (column ${col})` : ''}`,
        };
      }),
    };
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, errors: [{ code: 'syntax', file: fileName, path: [], message: `YAML error: ${(err as Error).message}` }] };
  }
  if (raw === null || raw === undefined) raw = {};

  const lineOf = (segs: Seg[]): number | undefined => {
    let node: unknown = doc.contents;
    let line: number | undefined;
    const lineAt = (n: unknown) => {
      const r = (n as YamlNode | undefined)?.range;
      return r ? lc.linePos(r[0]).line : undefined;
    };
    line = lineAt(node);
    for (const s of segs) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(s));
        if (!pair) break;
        line = lineAt(pair.key) ?? line;
        node = pair.value;
        if (!isMap(node) && !isSeq(node)) line = lineAt(node) ?? line;
      } else if (isSeq(node) && typeof s === 'number') {
        node = node.items[s];
        if (node === undefined) break;
        line = lineAt(node) ?? line;
      } else break;
    }
    return line;
  };
  return validateConfig(raw, fileName, opts, lineOf);
}

/** Validates the plain value of a config file; `lineOf` gives the line of a field for errors. */
function validateConfig(raw: unknown, fileName: string, opts: ParseOptions, lineOf: (segs: Seg[]) => number | undefined): ConfigParseResult {
  const c = new Collector(fileName, raw, lineOf);

  if (!isPlainObject(raw)) {
    // the whole document is this value: say what it is, never what it says
    const what = typeof raw === 'string' ? `a text of ${raw.length} characters` : describe(raw);
    c.add('not-a-document', [], `not a Bastion ${opts.policiesOnly ? 'policies document' : 'config file'}: expected a mapping with ${opts.policiesOnly ? 'policies' : 'mode, containers and policies'}, got ${what}`);
    return { ok: false, errors: c.errors };
  }
  // A file that is no Bastion document at all (a wrong path, a symlink to
  // some other file) is one error, not one per line of it: none of its
  // top-level keys is a field or close to one.
  const keys = Object.keys(raw);
  if (keys.length > 0 && !keys.some((k) => ROOT_FIELDS.includes(k) || closest(k, ROOT_FIELDS))) {
    c.add(
      'not-a-document',
      [],
      `not a Bastion ${opts.policiesOnly ? 'policies document' : 'config file'}: no ${opts.policiesOnly ? 'policies' : 'mode, containers or policies'} at the top level, but ${keys.length} other key${keys.length === 1 ? '' : 's'} (none of them quoted here: this may be another file)`,
      [keys[0]!],
    );
    return { ok: false, errors: c.errors };
  }
  if (opts.policiesOnly) {
    for (const key of ['mode', 'containers'] as const) {
      if (key in raw) c.add('not-allowed', [key], `not allowed here: this document only adds policies; ${key} belongs in the daemon's config file`);
    }
    if (raw.policies === undefined || raw.policies === null) c.add('required', ['policies'], 'required: the list of policies to add');
    else if (Array.isArray(raw.policies) && raw.policies.length === 0) c.add('required', ['policies'], 'empty: give at least one policy');
    if (c.errors.length > 0) return { ok: false, errors: c.errors };
  }
  const root = rootSchema.safeParse(raw);
  if (!root.success) c.zod([], root.error, raw, ROOT_FIELDS);
  const mode: Mode = root.success ? (root.data.mode ?? 'enforce') : raw.mode === 'audit' ? 'audit' : 'enforce';

  // ---- containers
  const rawContainers = Array.isArray(raw.containers) ? (raw.containers as unknown[]) : undefined;
  const containers: ContainerConfig[] = [];
  let containersOk = true;
  rawContainers?.forEach((item, i) => {
    if (!isPlainObject(item)) {
      c.add('invalid-type', ['containers', i], `expected a mapping with name, netns, interface, labels and mode, got ${describe(item)}`);
      containersOk = false;
      return;
    }
    const r = containerSchema.safeParse(item);
    if (!r.success) {
      c.zod(['containers', i], r.error, item, CONTAINER_FIELDS);
      containersOk = false;
      return;
    }
    containers.push({
      name: r.data.name,
      netns: r.data.netns,
      interface: r.data.interface ?? 'eth0',
      labels: (r.data.labels ?? {}) as Record<string, string>,
      ...(r.data.mode ? { mode: r.data.mode } : {}),
    });
  });
  if (raw.containers === undefined && opts.containersRequired) {
    c.add('required', ['containers'], 'required: no platform supplies containers here, so the file must list the containers to protect');
  }
  // duplicates (on the raw items, so that they are reported even when another field is wrong)
  const seenNames = new Map<string, number>();
  const seenIfaces = new Map<string, number>();
  rawContainers?.forEach((item, i) => {
    if (!isPlainObject(item)) return;
    if (typeof item.name === 'string' && item.name !== '') {
      const prev = seenNames.get(item.name);
      if (prev !== undefined) c.add('duplicate', ['containers', i, 'name'], `duplicate name ${quote(item.name)} (also containers[${prev}])`);
      else seenNames.set(item.name, i);
    }
    if (typeof item.netns === 'string') {
      const iface = typeof item.interface === 'string' ? item.interface : 'eth0';
      const k = `${item.netns}\0${iface}`;
      const prev = seenIfaces.get(k);
      if (prev !== undefined)
        c.add('duplicate', ['containers', i, 'netns'], `netns ${quote(item.netns)} interface ${iface} is already containers[${prev}]`);
      else seenIfaces.set(k, i);
    }
  });

  // label sets to check selectors against (best effort on items that failed),
  // indexed: a check costs the containers a selector may match, not all of them
  let labelSets: LabelIndex<number> | undefined;
  rawContainers?.forEach((item, i) => {
    if (!isPlainObject(item) || typeof item.name !== 'string') return;
    const labels = isPlainObject(item.labels)
      ? Object.fromEntries(Object.entries(item.labels).filter(([, v]) => typeof v === 'string'))
      : {};
    (labelSets ??= new LabelIndex<number>()).set(i, containerLabels({ name: item.name, labels: labels as Record<string, string> }));
  });
  if (rawContainers !== undefined) labelSets ??= new LabelIndex<number>();

  // ---- policies
  const rawPolicies = Array.isArray(raw.policies) ? (raw.policies as unknown[]) : [];
  const policies: PolicyConfig[] = [];
  const seenPolicies = new Map<string, number>();
  const schema = seenNames.size === 0 ? policiesOnlySchema() : policySchema(new Set(seenNames.keys()));
  const interned = new Interner();
  rawPolicies.forEach((item, i) => {
    const base: Seg[] = ['policies', i];
    if (!isPlainObject(item)) {
      c.add('invalid-type', base, `expected a mapping with name, from, to and ports, got ${describe(item)}`);
      return;
    }
    if (typeof item.name === 'string' && item.name !== '') {
      const prev = seenPolicies.get(item.name);
      if (prev !== undefined) c.add('duplicate', [...base, 'name'], `duplicate name ${quote(item.name)} (also policies[${prev}])`);
      else seenPolicies.set(item.name, i);
    }
    const r = schema.safeParse(item);
    if (!r.success) {
      c.zod(base, r.error, item, POLICY_FIELDS);
      return;
    }
    const p = r.data;
    const managed = (e: PolicyEnd) => e.kind === 'endpoints';
    if (!managed(p.from) && !managed(p.to)) {
      const desc = (e: PolicyEnd) => (e.kind === 'host' ? 'host' : e.kind === 'cidr' ? `{ cidr: ${e.cidr} }` : '');
      c.add(
        'invalid-value',
        base,
        p.from.kind === 'host' && p.to.kind === 'host'
          ? 'from: host and to: host: traffic of the host with itself is not filtered by Bastion; one end must be a container selector'
          : `neither end is a managed container (from: ${desc(p.from)}, to: ${desc(p.to)}); one end must be a container selector`,
      );
      return;
    }
    if (labelSets !== undefined && containersOk) {
      for (const which of ['from', 'to'] as const) {
        const e = p[which];
        if (e.kind === 'endpoints' && labelSets.select(e.selector).length === 0) {
          c.add('unresolved', [...base, which], `selector ${formatSelector(e.selector)} matches no container`);
        }
      }
    }
    policies.push({
      name: p.name,
      from: interned.end(p.from),
      to: interned.end(p.to),
      ...(p.ports !== undefined ? { ports: interned.ports(p.ports) } : {}),
      ...(p.mode !== undefined ? { mode: p.mode } : {}),
    });
  });

  if (c.errors.length > 0) return { ok: false, errors: c.errors };
  return { ok: true, config: { mode, ...(rawContainers !== undefined ? { containers } : {}), policies } };
}

/**
 * One object for each distinct policy end and port list of a config. At
 * 5,000 containers with 10 dependencies each, a config names every selector
 * about 20 times and the same few port lists over and over; sharing them
 * keeps the daemon's copy of 50,000 policies (and the rules and compiler
 * state built from them, which key caches by these objects) small. Nothing
 * downstream changes a policy once parsed.
 */
class Interner {
  private readonly ends = new Map<string, PolicyEnd>();
  private readonly portLists = new Map<string, PortRange[]>();

  end(e: PolicyEnd): PolicyEnd {
    // a policy end has a peer's shape: the compiler's canonical form keys it
    const k = canonicalPeer(e);
    const seen = this.ends.get(k);
    if (seen) return seen;
    this.ends.set(k, e);
    return e;
  }

  ports(p: PortRange[]): PortRange[] {
    const k = JSON.stringify(p);
    const seen = this.portLists.get(k);
    if (seen) return seen;
    this.portLists.set(k, p);
    return p;
  }
}

/** Reads (with the checks of readInputFile) and parses a config file. The only function here with I/O. */
export async function loadConfigFile(path: string, opts: ParseOptions & { maxBytes?: number } = {}): Promise<ConfigParseResult> {
  let text: string;
  try {
    text = readInputFile(path, { maxBytes: opts.maxBytes ?? DEFAULT_INPUT_MAX_BYTES });
  } catch (err) {
    if (!(err instanceof InputFileError)) throw err;
    return { ok: false, errors: [err.issue] };
  }
  return parseConfigText(text, path, opts);
}

// ======================================================= to the model

/**
 * A policy end as the peer of a rule: the end itself (the two types have the
 * same shape), in a one-element list shared by every rule with that peer.
 */
const peerLists = new WeakMap<PolicyEnd, Peer[]>();
function peersOf(e: PolicyEnd): Peer[] {
  let l = peerLists.get(e);
  if (!l) {
    const peer: Peer = e.kind === 'cidr' && !e.except?.length ? { kind: 'cidr', cidr: e.cidr } : e;
    peerLists.set(e, (l = [peer]));
  }
  return l;
}

/**
 * The policy set of a config. A policy "from A to B ports P" is two
 * directional rules with the policy's name as id: egress on A with peer B,
 * and ingress on B with peer A. An end that is not a container selector
 * (host, cidr) has no rule of its own: from host → only the ingress rule on
 * B; to host or to a cidr → only the egress rule on A; from a cidr → only
 * the ingress rule on B.
 */
export function configToPolicySet(config: BastionConfig): PolicySet {
  return { mode: config.mode, rules: config.policies.flatMap(policyToRules) };
}

/** The directional rules of one policy (see configToPolicySet). */
export function policyToRules(p: PolicyConfig): Rule[] {
  // rules share the policy's selectors, peers and ports: they are never changed
  const rules: Rule[] = [];
  const ports = p.ports ?? [];
  if (p.from.kind === 'endpoints') {
    rules.push({ id: p.name, subject: p.from.selector, direction: 'egress', peers: peersOf(p.to), ports });
  }
  if (p.to.kind === 'endpoints') {
    rules.push({ id: p.name, subject: p.to.selector, direction: 'ingress', peers: peersOf(p.from), ports });
  }
  return rules;
}

/** One end of a policy as a person writes it: "host", "cidr 10.0.0.0/8 except ...", or a selector. */
export function formatPolicyEnd(e: PolicyEnd): string {
  if (e.kind === 'host') return 'host';
  if (e.kind === 'cidr') return `cidr ${e.cidr}${e.except?.length ? ` except ${e.except.join(',')}` : ''}`;
  return formatSelector(e.selector);
}
