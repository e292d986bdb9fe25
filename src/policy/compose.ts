/**
 * Docker Compose → Bastion policy (pure: text in, policy out).
 *
 * Every dependency edge A → B of a Compose file (`depends_on`, list or map
 * form, and `links`, "svc" or "svc:alias") becomes one Bastion policy that
 * lets A open connections to B on B's ports: its `expose` entries plus the
 * container side of its `ports` (every syntax: "8080", "80:8080",
 * "127.0.0.1:80:8080/udp", "[::1]:80:8080", "9000-9010", long syntax
 * {target, published, protocol}). Nothing else between the services is
 * allowed (mode: enforce).
 *
 * A dependency on a service that declares no port (no expose, no ports) is
 * the one decision to make: Compose says A talks to B, but not on which port
 * (it is often in the image's EXPOSE, which a Compose file does not show).
 * Default (`unported: 'all'`): the edge allows every port and protocol from A
 * to B (still only A → B, nothing else) and says so, as a warning and as a
 * comment above that policy in the YAML output. With `unported: 'none'` the
 * edge allows nothing (and says so). Declaring `expose:` on B narrows it.
 *
 * Selectors use the labels the Docker adapter puts on every endpoint:
 * bastion.io/compose-service (from com.docker.compose.service), and, when a
 * project is known, com.docker.compose.project (so that two projects with a
 * "db" service are not mixed up).
 */
import { Document, LineCounter, isMap, isSeq, parseDocument, type Node as YamlNode } from 'yaml';
import { BUILTIN_LABELS, type Peer, type PolicySet, type PortRange, type Rule } from './model.js';
import { InvalidInput, formatPath, quote, type Issue, type IssueCode } from './errors.js';
import { publishedAccess, type PublishedPort, type PublishedPortsMode } from './published.js';
export type { PublishedPortsMode } from './published.js';

export const COMPOSE_PROJECT_LABEL = 'com.docker.compose.project';

export type ComposeProtocol = 'tcp' | 'udp' | 'sctp';

export interface ComposePort {
  protocol: ComposeProtocol;
  from: number;
  to: number;
}

/** A container port a `ports:` entry publishes, and the host address it is bound to (undefined: every address). */
export type PublishedComposePort = ComposePort & Pick<PublishedPort, 'hostIp'>;

export interface ComposeService {
  name: string;
  /** depends_on targets, in file order */
  dependsOn: string[];
  /** links targets (service names), in file order */
  links: string[];
  /** container-side ports: expose + ports, merged and sorted */
  ports: ComposePort[];
  /** the `ports:` entries (published on the host), with the host address each is bound to */
  published: PublishedComposePort[];
  networkMode?: string;
  privileged?: boolean;
  capAdd?: string[];
}

export interface ComposeApp {
  file: string;
  /** top-level `name:` */
  name?: string;
  services: ComposeService[];
  /** non-fatal findings while reading (unset variables, ignored fields) */
  warnings: string[];
}

/**
 * An invalid Compose file: its issues name the file, the line and column of
 * the field, and the field as Compose prints it (services.web.ports[2]).
 */
export class ComposeError extends InvalidInput {
  constructor(issues: Issue[]) {
    super(issues);
    this.name = 'ComposeError';
  }
}

export interface ComposeParseOptions {
  /** file name used in messages (default compose.yaml) */
  file?: string;
  /** variables for ${VAR} interpolation (default: none, every variable unset) */
  env?: Record<string, string | undefined>;
}

export interface ComposePolicyOptions {
  /**
   * Compose project the selectors are scoped to (label com.docker.compose.project).
   * undefined: the file's top-level `name:` if any, else unscoped; null: unscoped.
   */
  project?: string | null;
  /** what an edge to a service without ports allows (default 'all') */
  unported?: 'all' | 'none';
  /** what a published port (`ports:`) lets in (default 'allow'): see src/policy/published.ts */
  publishedPorts?: PublishedPortsMode;
}

/** One end of a generated policy: labels, the host, or a CIDR (outside addresses). */
export type BastionPolicyEnd = Record<string, string> | 'host' | { cidr: string };

/** One policy of Bastion's config format (as in `policies:` of bastion.yaml). */
export interface BastionPolicy {
  name: string;
  from: BastionPolicyEnd;
  to: BastionPolicyEnd;
  /** "8080/tcp", "9000-9010/udp"; absent: every port and protocol */
  ports?: string[];
}

export interface ComposePolicies {
  mode: 'enforce';
  policies: BastionPolicy[];
  /** project the selectors are scoped to, if any */
  project?: string;
  /** per policy name: why it is as it is (rendered as a YAML comment) */
  notes: Record<string, string>;
  warnings: string[];
  /** the edges, for display: from → to, via depends_on and/or links */
  edges: Array<{ from: string; to: string; via: Array<'depends_on' | 'links'> }>;
}

// ------------------------------------------------------------------ parsing

type Path = Array<string | number>;

function pathText(p: Path): string {
  return formatPath(p, 'dotted');
}

class Reader {
  readonly issues: Issue[] = [];
  readonly warnings: string[] = [];
  constructor(
    readonly file: string,
    private readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  error(path: Path, message: string, code: IssueCode = 'invalid-value'): void {
    const pos = this.position(path);
    this.issues.push({ code, file: this.file, path, pathStyle: 'dotted', ...pos, message });
  }

  private position(path: Path): { line?: number; column?: number } {
    // the deepest node of the path that exists in the document
    for (let n = path.length; n >= 0; n--) {
      let node: unknown;
      try {
        node = this.doc.getIn(path.slice(0, n), true);
      } catch {
        node = undefined;
      }
      const range = (node as YamlNode | undefined)?.range;
      if (range) {
        const { line, col } = this.lines.linePos(range[0]);
        return { line, column: col };
      }
    }
    return {};
  }
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${typeof v === 'string' ? quote(v) : JSON.stringify(v)}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, ${VAR:+alt}, ${VAR+alt}, $VAR, $$. */
export function interpolate(
  text: string,
  env: Record<string, string | undefined>,
  onProblem: (msg: string, fatal: boolean) => void,
): string {
  return text.replace(/\$(\$|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (all, what: string, braced?: string, bare?: string) => {
    if (what === '$') return '$';
    if (bare !== undefined) {
      const v = env[bare];
      if (v === undefined) onProblem(`variable ${bare} is not set: using an empty string`, false);
      return v ?? '';
    }
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$/s.exec(braced ?? '');
    if (!m) {
      onProblem(`invalid interpolation ${quote(all)}`, true);
      return all;
    }
    const [, name, op, arg = ''] = m;
    const v = env[name!];
    const unset = v === undefined;
    const empty = unset || v === '';
    switch (op) {
      case ':-':
        return empty ? arg : v!;
      case '-':
        return unset ? arg : v!;
      case ':?':
      case '?':
        if (op === ':?' ? empty : unset) {
          onProblem(`required variable ${name} is not set${arg ? `: ${arg}` : ''}`, true);
          return '';
        }
        return v!;
      case ':+':
        return empty ? '' : arg;
      case '+':
        return unset ? '' : arg;
      default:
        if (unset) onProblem(`variable ${name} is not set: using an empty string`, false);
        return v ?? '';
    }
  });
}

function interpolateTree(v: unknown, path: Path, env: Record<string, string | undefined>, r: Reader): unknown {
  if (typeof v === 'string') {
    return interpolate(v, env, (msg, fatal) => (fatal ? r.error(path, msg) : r.warnings.push(`${r.file}: ${pathText(path)}: ${msg}`)));
  }
  if (Array.isArray(v)) return v.map((x, i) => interpolateTree(x, [...path, i], env, r));
  if (isRecord(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = interpolateTree(x, [...path, k], env, r);
    return out;
  }
  return v;
}

const SERVICE_NAME = /^[a-zA-Z0-9._-]+$/;

function parsePortNumber(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** "8080", "8080-8090" → range (undefined when invalid). */
function parseRange(s: string): { from: number; to: number } | undefined {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s.trim());
  if (!m) return undefined;
  const from = parsePortNumber(m[1]!);
  const to = m[2] !== undefined ? parsePortNumber(m[2]) : from;
  if (from === undefined || to === undefined || to < from) return undefined;
  return { from, to };
}

function parseProtocol(s: string | undefined): ComposeProtocol | undefined {
  const p = (s ?? 'tcp').toLowerCase();
  return p === 'tcp' || p === 'udp' || p === 'sctp' ? p : undefined;
}

/** "PORTS[/PROTOCOL]" → the ports part and the protocol (tcp when none), or why not. */
function splitProtocol(spec: string): { s: string; protocol: ComposeProtocol } | string {
  const s = spec.trim();
  const slash = s.lastIndexOf('/');
  if (slash < 0) return { s, protocol: 'tcp' };
  const protocol = parseProtocol(s.slice(slash + 1));
  if (!protocol) return `unknown protocol ${quote(s.slice(slash + 1))} (use tcp, udp or sctp)`;
  return { s: s.slice(0, slash), protocol };
}

/**
 * The container side of one `ports` entry, short syntax:
 * [HOST_IP:][HOST_PORT[-RANGE]:]CONTAINER_PORT[-RANGE][/PROTOCOL], HOST_IP
 * may be an IPv6 address in brackets.
 */
export function parseShortPort(spec: string): PublishedComposePort | string {
  const split = splitProtocol(spec);
  if (typeof split === 'string') return split;
  let { s } = split;
  const { protocol } = split;
  let hostIp: string | undefined;
  if (s.startsWith('[')) {
    const close = s.indexOf(']:');
    if (close < 0) return 'an IPv6 host address must be followed by ":" and a port';
    hostIp = s.slice(1, close);
    s = s.slice(close + 2);
  }
  const parts = s.split(':');
  if (parts.length > 3) return 'too many ":" (use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]; IPv6 addresses in brackets)';
  if (parts.length === 3) hostIp = parts[0] || undefined;
  if (parts.length >= 2) {
    const host = parts[parts.length - 2]!;
    if (host !== '' && !parseRange(host)) return `invalid host port ${quote(host)}`;
  }
  const container = parts[parts.length - 1]!;
  const range = parseRange(container);
  if (!range) return `invalid container port ${quote(container)} (a port 1-65535 or a range such as 9000-9010)`;
  return { protocol, ...range, ...(hostIp ? { hostIp } : {}) };
}

function parseExpose(spec: string): ComposePort | string {
  const split = splitProtocol(spec);
  if (typeof split === 'string') return split;
  const { s, protocol } = split;
  const range = parseRange(s);
  if (!range) return `invalid port ${quote(s)} (a port 1-65535 or a range such as 9000-9010)`;
  return { protocol, ...range };
}

/** Sorted, overlapping or adjacent ranges of one protocol merged. */
export function mergePorts(ports: ComposePort[]): ComposePort[] {
  const order: Record<ComposeProtocol, number> = { tcp: 0, udp: 1, sctp: 2 };
  const sorted = [...ports].sort((a, b) => order[a.protocol] - order[b.protocol] || a.from - b.from || a.to - b.to);
  const out: ComposePort[] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last && last.protocol === p.protocol && p.from <= last.to + 1) last.to = Math.max(last.to, p.to);
    else out.push({ ...p });
  }
  return out;
}

export function portText(p: Pick<PortRange, 'from' | 'to' | 'protocol'>): string {
  return p.from === p.to ? `${p.from}/${p.protocol}` : `${p.from}-${p.to}/${p.protocol}`;
}

/** Reads a Compose file. Throws ComposeError naming file, line and field for anything invalid. */
export function parseCompose(text: string, o: ComposeParseOptions = {}): ComposeApp {
  const file = o.file ?? 'compose.yaml';
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, merge: true, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ComposeError(
      doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0]);
        return { code: 'syntax' as const, file, path: [], line: pos.line, column: pos.col, message: `invalid YAML: ${e.message.split('\n')[0]}` };
      }),
    );
  }
  const r = new Reader(file, doc, lines);
  const raw0 = doc.toJS({ maxAliasCount: 1000 }) as unknown;
  if (!isRecord(raw0)) {
    r.error([], `a Compose file is a mapping with a "services" key, not ${describe(raw0)}`, 'not-a-document');
    throw new ComposeError(r.issues);
  }
  const raw = interpolateTree(raw0, [], o.env ?? {}, r) as Record<string, unknown>;
  const servicesRaw = raw.services;
  if (!isRecord(servicesRaw)) {
    if (servicesRaw === undefined) r.error([], 'no "services" key', 'required');
    else r.error(['services'], `must be a mapping of services, not ${describe(servicesRaw)}`, 'invalid-type');
    throw new ComposeError(r.issues);
  }
  const names = Object.keys(servicesRaw);
  if (names.length === 0) r.error(['services'], 'no service defined', 'required');
  const defined = new Set(names);
  const services: ComposeService[] = [];
  let name: string | undefined;
  if (raw.name !== undefined) {
    if (typeof raw.name !== 'string' || !raw.name) r.error(['name'], `must be a project name, not ${describe(raw.name)}`);
    else name = raw.name;
  }

  for (const svc of names) {
    const base: Path = ['services', svc];
    const def = servicesRaw[svc];
    if (!SERVICE_NAME.test(svc)) r.error(base, `invalid service name ${quote(svc)} (letters, digits, ".", "_" and "-")`);
    if (!isRecord(def)) {
      r.error(base, `a service is a mapping, not ${describe(def)}`, 'invalid-type');
      continue;
    }
    const s: ComposeService = { name: svc, dependsOn: [], links: [], ports: [], published: [] };
    const target = (path: Path, t: unknown): string | undefined => {
      if (typeof t !== 'string' || !t) {
        r.error(path, `must be a service name, not ${describe(t)}`, 'invalid-type');
        return undefined;
      }
      if (!defined.has(t)) {
        r.error(path, `service ${quote(t)} is not defined in services`, 'unresolved');
        return undefined;
      }
      if (t === svc) {
        r.error(path, `a service cannot depend on itself`);
        return undefined;
      }
      return t;
    };

    // depends_on: [a, b] or {a: {condition: ...}, b: {...}}
    const dep = def.depends_on;
    if (Array.isArray(dep)) {
      dep.forEach((d, i) => {
        const t = target([...base, 'depends_on', i], d);
        if (t && !s.dependsOn.includes(t)) s.dependsOn.push(t);
      });
    } else if (isRecord(dep)) {
      for (const [d, cond] of Object.entries(dep)) {
        const t = target([...base, 'depends_on', d], d);
        if (cond !== null && cond !== undefined && !isRecord(cond)) {
          r.error([...base, 'depends_on', d], `must be a mapping (condition, restart, required), not ${describe(cond)}`, 'invalid-type');
        } else if (isRecord(cond) && cond.condition !== undefined) {
          const ok = ['service_started', 'service_healthy', 'service_completed_successfully'];
          if (!ok.includes(String(cond.condition))) {
            r.error([...base, 'depends_on', d, 'condition'], `unknown condition ${describe(cond.condition)} (use ${ok.join(', ')})`);
          }
        }
        if (t && !s.dependsOn.includes(t)) s.dependsOn.push(t);
      }
    } else if (dep !== undefined && dep !== null) {
      r.error([...base, 'depends_on'], `must be a list of services or a mapping, not ${describe(dep)}`, 'invalid-type');
    }

    // links: ["db", "db:database"]
    const links = def.links;
    if (Array.isArray(links)) {
      links.forEach((l, i) => {
        const p: Path = [...base, 'links', i];
        if (typeof l !== 'string') return r.error(p, `must be "SERVICE" or "SERVICE:ALIAS", not ${describe(l)}`, 'invalid-type');
        const parts = l.split(':');
        if (parts.length > 2 || (parts.length === 2 && !parts[1])) return r.error(p, `must be "SERVICE" or "SERVICE:ALIAS", not ${quote(l)}`);
        const t = target(p, parts[0]);
        if (t && !s.links.includes(t)) s.links.push(t);
      });
    } else if (links !== undefined && links !== null) {
      r.error([...base, 'links'], `must be a list, not ${describe(links)}`, 'invalid-type');
    }
    if (def.external_links !== undefined) {
      r.warnings.push(`${file}: ${pathText([...base, 'external_links'])}: containers outside this file are not known here: ignored`);
    }

    const ports: ComposePort[] = [];
    const published: PublishedComposePort[] = [];
    // expose: ["3000", 8000, "9000-9010/udp"]
    const expose = def.expose;
    if (Array.isArray(expose)) {
      expose.forEach((e, i) => {
        const p: Path = [...base, 'expose', i];
        if (typeof e !== 'string' && typeof e !== 'number') return r.error(p, `must be a port, not ${describe(e)}`, 'invalid-type');
        const parsed = parseExpose(String(e));
        if (typeof parsed === 'string') r.error(p, parsed);
        else ports.push(parsed);
      });
    } else if (expose !== undefined && expose !== null) {
      r.error([...base, 'expose'], `must be a list of ports, not ${describe(expose)}`, 'invalid-type');
    }

    // ports: short syntax strings/numbers, or long syntax mappings
    const portList = def.ports;
    if (Array.isArray(portList)) {
      portList.forEach((e, i) => {
        const p: Path = [...base, 'ports', i];
        if (typeof e === 'number') {
          const n = parsePortNumber(String(e));
          if (n === undefined || !Number.isInteger(e)) return r.error(p, `invalid port ${e} (1-65535)`);
          published.push({ protocol: 'tcp', from: n, to: n });
          return void ports.push({ protocol: 'tcp', from: n, to: n });
        }
        if (typeof e === 'string') {
          const parsed = parseShortPort(e);
          if (typeof parsed === 'string') r.error(p, `invalid port ${quote(e)}: ${parsed}`);
          else {
            published.push(parsed);
            ports.push({ protocol: parsed.protocol, from: parsed.from, to: parsed.to });
          }
          return;
        }
        if (isRecord(e)) {
          const known = ['target', 'published', 'host_ip', 'protocol', 'mode', 'name', 'app_protocol'];
          for (const k of Object.keys(e)) if (!known.includes(k)) r.error([...p, k], `unknown field (long syntax has ${known.join(', ')})`, 'unknown-field');
          if (e.target === undefined) return r.error(p, 'long syntax needs "target" (the container port)', 'required');
          const range = typeof e.target === 'number' || typeof e.target === 'string' ? parseRange(String(e.target)) : undefined;
          if (!range) return r.error([...p, 'target'], `invalid container port ${describe(e.target)}`);
          if (e.published !== undefined && e.published !== null && !parseRange(String(e.published))) {
            return r.error([...p, 'published'], `invalid published port ${describe(e.published)}`);
          }
          const protocol = parseProtocol(e.protocol === undefined ? undefined : String(e.protocol));
          if (!protocol) return r.error([...p, 'protocol'], `unknown protocol ${describe(e.protocol)} (use tcp, udp or sctp)`);
          const hostIp = typeof e.host_ip === 'string' && e.host_ip !== '' ? e.host_ip : undefined;
          published.push({ protocol, ...range, ...(hostIp ? { hostIp } : {}) });
          return void ports.push({ protocol, ...range });
        }
        r.error(p, `must be a port ("80", "8080:80", "127.0.0.1:8080:80/udp") or a mapping with target, not ${describe(e)}`, 'invalid-type');
      });
    } else if (portList !== undefined && portList !== null) {
      r.error([...base, 'ports'], `must be a list, not ${describe(portList)}`, 'invalid-type');
    }
    s.ports = mergePorts(ports);
    s.published = published;

    if (typeof def.network_mode === 'string') s.networkMode = def.network_mode;
    if (def.privileged === true) s.privileged = true;
    if (Array.isArray(def.cap_add)) s.capAdd = def.cap_add.map(String);
    services.push(s);
  }
  if (r.issues.length) throw new ComposeError(sortIssues(r.issues));
  return { file, ...(name ? { name } : {}), services, warnings: r.warnings };
}

function sortIssues(issues: Issue[]): Issue[] {
  return issues
    .map((x, i) => [x, i] as const)
    .sort(([a, i], [b, j]) => (a.line ?? Infinity) - (b.line ?? Infinity) || (a.column ?? 0) - (b.column ?? 0) || i - j)
    .map(([x]) => x);
}

// ------------------------------------------------------------------ policy

/** What Compose does to a project name: lower case, only [a-z0-9_-], starting with a letter or digit. */
export function normalizeProjectName(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9_-]/g, '')
    .replace(/^[^a-z0-9]+/, '');
}

export function composeToPolicies(app: ComposeApp, o: ComposePolicyOptions = {}): ComposePolicies {
  const project = o.project === null ? undefined : o.project ?? (app.name ? normalizeProjectName(app.name) : undefined);
  const unported = o.unported ?? 'all';
  const warnings = [...app.warnings];
  const notes: Record<string, string> = {};
  const byName = new Map(app.services.map((s) => [s.name, s]));
  const selector = (svc: string): Record<string, string> => ({
    [BUILTIN_LABELS.composeService]: svc,
    ...(project ? { [COMPOSE_PROJECT_LABEL]: project } : {}),
  });

  for (const s of app.services) {
    const why: string[] = [];
    if (s.networkMode === 'host') why.push('network_mode: host');
    else if (s.networkMode && /^(service|container):/.test(s.networkMode)) why.push(`network_mode: ${s.networkMode}`);
    if (s.privileged) why.push('privileged: true');
    const admin = s.capAdd?.find((c) => ['NET_ADMIN', 'CAP_NET_ADMIN', 'ALL'].includes(c.toUpperCase()));
    if (admin && !s.privileged) why.push(`cap_add: ${admin}`);
    if (why.length) warnings.push(`service ${s.name} has ${why.join(', ')}: Bastion cannot protect its containers; its policies are emitted but do not apply to it`);
  }

  // edges, in a stable order: by source service, then target
  const edgeMap = new Map<string, { from: string; to: string; via: Array<'depends_on' | 'links'> }>();
  for (const s of app.services) {
    const add = (to: string, via: 'depends_on' | 'links') => {
      const k = `${s.name}\u0000${to}`;
      const e = edgeMap.get(k) ?? { from: s.name, to, via: [] };
      if (!e.via.includes(via)) e.via.push(via);
      edgeMap.set(k, e);
    };
    for (const d of s.dependsOn) add(d, 'depends_on');
    for (const l of s.links) add(l, 'links');
  }
  const edges = [...edgeMap.values()].sort((a, b) => cmp(a.from, b.from) || cmp(a.to, b.to));

  const policies: BastionPolicy[] = [];
  const used = new Set<string>();
  for (const e of edges) {
    const target = byName.get(e.to)!;
    let name = `${e.from}-to-${e.to}`;
    for (let i = 2; used.has(name); i++) name = `${e.from}-to-${e.to}-${i}`;
    used.add(name);
    const via = e.via.join(' and ');
    if (target.ports.length === 0) {
      if (unported === 'none') {
        warnings.push(
          `service ${e.to} declares no ports (expose or ports): the dependency ${e.from} → ${e.to} (${via}) allows nothing; declare "expose:" on ${e.to} to open it`,
        );
        continue;
      }
      warnings.push(
        `service ${e.to} declares no ports (expose or ports): the dependency ${e.from} → ${e.to} (${via}) allows every port and protocol; declare "expose:" on ${e.to} to narrow it`,
      );
      notes[name] = `${e.from} → ${e.to} (${via}): ${e.to} declares no ports (expose or ports), so EVERY port and protocol is allowed; declare "expose:" on ${e.to} to narrow it`;
      policies.push({ name, from: selector(e.from), to: selector(e.to) });
    } else {
      notes[name] = `${e.from} → ${e.to} (${via})`;
      policies.push({ name, from: selector(e.from), to: selector(e.to), ports: target.ports.map(portText) });
    }
  }
  // published ports: the declared intent to serve them, from where Docker delivers them
  const mode = o.publishedPorts ?? 'allow';
  for (const s of [...app.services].sort((a, b) => cmp(a.name, b.name))) {
    const { fromHost, fromOutside: outside } = publishedAccess(s.published, mode);
    if (fromHost.length) {
      const hostName = `${s.name}-published-from-host`;
      policies.push({ name: hostName, from: 'host', to: selector(s.name), ports: fromHost.map(portText) });
      notes[hostName] = `${s.name} publishes ${fromHost.map(portText).join(', ')} (ports:): Docker's proxy and the host's own connections arrive from the host`;
      if (outside.length) {
        const worldName = `${s.name}-published-from-outside`;
        policies.push({ name: worldName, from: { cidr: '0.0.0.0/0' }, to: selector(s.name), ports: outside.map(portText) });
        notes[worldName] = `${s.name} publishes ${outside.map(portText).join(', ')} on a non-loopback address: connections from outside arrive with their own address (DNAT)`;
      }
    }
  }
  return { mode: 'enforce', policies, ...(project ? { project } : {}), notes, warnings, edges };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The config document (`mode` + `policies`), as plain data (what `-o json` prints). */
export function composeConfigDocument(p: ComposePolicies): { mode: 'enforce'; policies: BastionPolicy[] } {
  return { mode: p.mode, policies: p.policies.map((x) => ({ ...x })) };
}

/** The config document as YAML, with a header and a comment above each policy saying where it comes from. */
export function renderComposeYaml(p: ComposePolicies, source: string): string {
  const doc = new Document(composeConfigDocument(p));
  const header = [
    ` Bastion policy generated by "bastion compose" from ${source}${p.project ? ` (project ${p.project})` : ''}.`,
    ' Each depends_on/links edge A → B lets A open connections to B on the',
    " container ports B declares (expose, and the container side of ports).",
    ' Everything else between these services is denied.',
    ' A published port (ports:) is reachable from the host and, unless bound to a',
    ' loopback address, from outside: Docker delivers it from there.',
  ];
  if (p.policies.length === 0) header.push(' No dependency edge: every service is isolated from every other.');
  doc.commentBefore = header.join('\n');
  const seq = doc.get('policies', true);
  if (isSeq(seq)) {
    if (seq.items.length === 0) seq.flow = true;
    seq.items.forEach((item, i) => {
      if (!isMap(item)) return;
      const name = p.policies[i]!.name;
      if (p.notes[name]) item.commentBefore = ` ${p.notes[name]}`;
      for (const k of ['from', 'to', 'ports']) {
        const v = item.get(k, true);
        if (isMap(v) || isSeq(v)) v.flow = true;
      }
    });
  }
  return doc.toString({ lineWidth: 0, flowCollectionPadding: true });
}

/** The same policies in Bastion's internal model (an egress and an ingress rule each). */
export function composeToPolicySet(p: ComposePolicies): PolicySet {
  const rules: Rule[] = [];
  const peer = (e: BastionPolicyEnd): Peer =>
    e === 'host' ? { kind: 'host' } : 'cidr' in e && typeof e.cidr === 'string' && Object.keys(e).length === 1 ? { kind: 'cidr', cidr: e.cidr } : { kind: 'endpoints', selector: { matchLabels: { ...(e as Record<string, string>) } } };
  const labels = (e: BastionPolicyEnd): Record<string, string> | undefined => (e === 'host' || ('cidr' in e && Object.keys(e).length === 1) ? undefined : (e as Record<string, string>));
  for (const pol of p.policies) {
    const ports: PortRange[] = (pol.ports ?? []).map((s) => {
      const m = /^(\d+)(?:-(\d+))?\/(tcp|udp|sctp)$/.exec(s)!;
      return { protocol: m[3] as ComposeProtocol, from: Number(m[1]), to: Number(m[2] ?? m[1]) };
    });
    const from = labels(pol.from);
    const to = labels(pol.to);
    if (from) rules.push({ id: pol.name, subject: { matchLabels: { ...from } }, direction: 'egress', peers: [peer(pol.to)], ports });
    if (to) rules.push({ id: pol.name, subject: { matchLabels: { ...to } }, direction: 'ingress', peers: [peer(pol.from)], ports: ports.map((x) => ({ ...x })) });
  }
  return { mode: p.mode, rules };
}

/** Parse + compile in one step. Throws ComposeError. */
export function composeTextToPolicies(text: string, o: ComposeParseOptions & ComposePolicyOptions = {}): ComposePolicies {
  return composeToPolicies(parseCompose(text, o), o);
}
