/**
 * Policies added at run time through the API (`bastion policy add`, POST
 * /v1/policies), next to the config file's. They are the fast path for a
 * single change: only the rules of the change are compiled, instead of
 * re-reading a config file that may list thousands of containers.
 *
 * They are kept in a file next to the daemon's socket, so a restarted daemon
 * enforces them again, and `bastion down` forgets them with everything else.
 */
import { readFileSync, renameSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Rule } from '../policy/model.js';
import {
  formatConfigError,
  formatPolicyEnd,
  parseConfigText,
  policyToRules,
  type ConfigError,
  type PolicyConfig,
} from '../policy/bastion-config.js';
import { formatPortRange } from '../policy/ports.js';
import type { PolicyRow } from '../api/types.js';

export interface RuntimePolicy {
  policy: PolicyConfig;
  rules: Rule[];
  /** ISO time it was added or last replaced */
  added: string;
}

export function policyRow(p: PolicyConfig, source: PolicyRow['source'], added?: string): PolicyRow {
  return {
    name: p.name,
    source,
    from: formatPolicyEnd(p.from),
    to: formatPolicyEnd(p.to),
    ports: p.ports?.length ? p.ports.map(formatPortRange).join(',') : 'any',
    ...(added ? { added } : {}),
    ...(p.mode ? { mode: p.mode } : {}),
  };
}

export type ParsedPolicies = { ok: true; policies: PolicyConfig[] } | { ok: false; errors: string[] };

/** Validate a policies document (`policies: [...]`, YAML or JSON) as the config file's policies are. */
export function parsePoliciesDocument(text: string, source: string): ParsedPolicies {
  const r = parseConfigText(text, source, { policiesOnly: true });
  if (!r.ok) return { ok: false, errors: r.errors.map((e: ConfigError) => formatConfigError(e)) };
  return { ok: true, policies: r.config.policies };
}

export class RuntimePolicies {
  private readonly byName = new Map<string, RuntimePolicy>();

  constructor(private readonly file: string) {}

  get size(): number {
    return this.byName.size;
  }

  get(name: string): RuntimePolicy | undefined {
    return this.byName.get(name);
  }

  all(): RuntimePolicy[] {
    return [...this.byName.values()];
  }

  rules(): Rule[] {
    return this.all().flatMap((p) => p.rules);
  }

  /** Set (add or replace) policies; returns the rules that leave. */
  set(policies: PolicyConfig[], now = new Date()): { added: Rule[]; removed: Rule[] } {
    const added: Rule[] = [];
    const removed: Rule[] = [];
    for (const p of policies) {
      const old = this.byName.get(p.name);
      if (old) removed.push(...old.rules);
      const rules = policyToRules(p);
      added.push(...rules);
      this.byName.set(p.name, { policy: p, rules, added: now.toISOString() });
    }
    return { added, removed };
  }

  /** Delete by name; returns the rules that leave. Names that are not here are ignored. */
  delete(names: string[]): Rule[] {
    const removed: Rule[] = [];
    for (const n of names) {
      const old = this.byName.get(n);
      if (!old) continue;
      removed.push(...old.rules);
      this.byName.delete(n);
    }
    return removed;
  }

  /** Write the file whole, then rename it over the old one: never half written. */
  save(): void {
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    const body = { policies: this.all().map((p) => ({ ...toDocumentPolicy(p.policy), added: p.added })) };
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(body), { mode: 0o600 });
    renameSync(tmp, this.file);
  }

  /**
   * Read the file a previous run saved. A missing file is an empty set; a
   * file that does not validate is reported and not used (the daemon starts
   * with the config file's policies only, and says so).
   */
  load(): { loaded: number; errors: string[] } {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch {
      return { loaded: 0, errors: [] };
    }
    let raw: { policies?: Array<Record<string, unknown>> };
    try {
      raw = JSON.parse(text) as typeof raw;
    } catch (err) {
      return { loaded: 0, errors: [`${this.file}: not JSON: ${(err as Error).message}`] };
    }
    const added = new Map<string, string>();
    const stripped = (raw.policies ?? []).map((p) => {
      const { added: at, ...rest } = p;
      if (typeof at === 'string' && typeof rest.name === 'string') added.set(rest.name, at);
      return rest;
    });
    if (stripped.length === 0) return { loaded: 0, errors: [] };
    const parsed = parsePoliciesDocument(JSON.stringify({ policies: stripped }), this.file);
    if (!parsed.ok) return { loaded: 0, errors: parsed.errors };
    for (const p of parsed.policies) {
      this.byName.set(p.name, { policy: p, rules: policyToRules(p), added: added.get(p.name) ?? new Date().toISOString() });
    }
    return { loaded: parsed.policies.length, errors: [] };
  }
}

/** A parsed policy back in the document form (what parsePoliciesDocument reads): parse(toDocument(p)) = p. */
export function toDocumentPolicy(p: PolicyConfig): Record<string, unknown> {
  const end = (x: PolicyConfig['from']): unknown => {
    if (x.kind === 'host') return 'host';
    if (x.kind === 'cidr') return { cidr: x.cidr, ...(x.except?.length ? { except: x.except } : {}) };
    // The explicit form, so that no label key can be read as a field (cidr, except).
    const sel = x.selector;
    return {
      ...(sel.matchLabels && Object.keys(sel.matchLabels).length ? { matchLabels: sel.matchLabels } : {}),
      ...(sel.matchExpressions?.length ? { matchExpressions: sel.matchExpressions } : {}),
    };
  };
  return { name: p.name, from: end(p.from), to: end(p.to), ...(p.ports ? { ports: p.ports.map(formatPortRange) } : {}), ...(p.mode ? { mode: p.mode } : {}) };
}
