/**
 * Policies added at run time through the API (`bastion policy add`, POST
 * /v1/policies), next to the config file's. They are the fast path for a
 * single change: only the rules of the change are compiled, instead of
 * re-reading a config file that may list thousands of containers.
 *
 * They are kept in a file next to the daemon's socket, so a restarted daemon
 * enforces them again, and `bastion down` forgets them with everything else.
 */
import { readdirSync, readFileSync, renameSync } from 'node:fs';
import { writeFileDurably } from './durable-file.js';
import { basename, dirname, join } from 'node:path';
import type { Rule } from '../policy/model.js';
import { policyToRules, type PolicyConfig } from '../policy/bastion-config.js';
import { formatIssue } from '../policy/errors.js';
import { describePolicy, parsePoliciesDocument, toDocumentPolicy } from '../policy/policy-document.js';
import type { PolicyRow } from '../api/types.js';

export { parsePoliciesDocument, toDocumentPolicy, type ParsedPolicies } from '../policy/policy-document.js';

export interface RuntimePolicy {
  policy: PolicyConfig;
  rules: Rule[];
  /** ISO time it was added or last replaced */
  added: string;
}

export function policyRow(p: PolicyConfig, source: PolicyRow['source'], added?: string): PolicyRow {
  return { name: p.name, source, ...describePolicy(p), ...(added ? { added } : {}), ...(p.mode ? { mode: p.mode } : {}), spec: toDocumentPolicy(p) };
}

/** Largest policies document accepted (`policy add -f`, the body of POST /v1/policies). */
export const POLICIES_DOCUMENT_MAX_BYTES = 4 * 1024 * 1024;

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

  /** Write the file whole and durably (durable-file.ts): a crash leaves the old file or the new one. */
  save(): Promise<void> {
    const body = { policies: this.all().map((p) => ({ ...toDocumentPolicy(p.policy), added: p.added })) };
    return writeFileDurably(this.file, JSON.stringify(body));
  }

  /**
   * Read the file a previous run saved. A missing file is an empty set. A
   * file that cannot be used (not JSON, a policy that does not validate) is
   * never dropped silently, and never overwritten by the next save: it is
   * moved aside, to `<file>.unreadable-<time>`, and reported (the daemon
   * logs it as an error, `status` names it and exits non-zero, a metric
   * counts it) until an operator has looked at it and removed it.
   */
  load(now = new Date()): { loaded: number; errors: string[]; keptAside?: string } {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { loaded: 0, errors: [] };
      const message = `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
      return this.setAside([formatIssue({ code: 'file', file: this.file, path: [], message })], now);
    }
    let raw: { policies?: unknown };
    try {
      raw = JSON.parse(text) as typeof raw;
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || (raw.policies !== undefined && !Array.isArray(raw.policies))) {
        throw new Error('not a mapping with a policies list');
      }
    } catch (err) {
      // JSON.parse's message can quote the text near the error: not that part
      const why = (err as Error).message.replace(/[,:]? *".*$/s, '');
      const message = `not a saved policies document (${text.length} bytes): ${why}`;
      return this.setAside([formatIssue({ code: 'not-a-document', file: this.file, path: [], message })], now);
    }
    const added = new Map<string, string>();
    const stripped = ((raw.policies ?? []) as unknown[]).map((p) => {
      if (typeof p !== 'object' || p === null) return p;
      const { added: at, ...rest } = p as Record<string, unknown>;
      if (typeof at === 'string' && typeof rest.name === 'string') added.set(rest.name, at);
      return rest;
    });
    if (stripped.length === 0) return { loaded: 0, errors: [] };
    const parsed = parsePoliciesDocument(JSON.stringify({ policies: stripped }), this.file);
    if (!parsed.ok) return this.setAside(parsed.errors, now);
    for (const p of parsed.policies) {
      this.byName.set(p.name, { policy: p, rules: policyToRules(p), added: added.get(p.name) ?? now.toISOString() });
    }
    return { loaded: parsed.policies.length, errors: [] };
  }

  private setAside(errors: string[], now: Date): { loaded: number; errors: string[]; keptAside?: string } {
    const aside = `${this.file}${UNREADABLE_SUFFIX}${now.toISOString().replace(/[:.]/g, '-')}`;
    try {
      renameSync(this.file, aside);
      return { loaded: 0, errors, keptAside: aside };
    } catch (err) {
      return { loaded: 0, errors: [...errors, `could not move it aside to ${aside}: ${(err as Error).message}`] };
    }
  }

  /** Files earlier loads moved aside and nobody has removed yet. */
  unreadableCopies(): string[] {
    return unreadableCopiesOf(this.file);
  }
}

/** What a file moved aside by RuntimePolicies.load is called, after the policies file's own name. */
const UNREADABLE_SUFFIX = '.unreadable-';

/** Saved-policies files moved aside because they could not be read, oldest first. */
export function unreadableCopiesOf(file: string): string[] {
  const dir = dirname(file);
  const prefix = `${basename(file)}${UNREADABLE_SUFFIX}`;
  try {
    return readdirSync(dir)
      .filter((n) => n.startsWith(prefix))
      .sort()
      .map((n) => join(dir, n));
  } catch {
    return [];
  }
}
