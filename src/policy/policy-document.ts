/**
 * A `policies:` document (what `bastion policy add -f` reads, what the API
 * takes, one record of the cluster store): validated exactly as the config
 * file's policies are, and turned back into that form. Pure.
 */
import { formatPolicyEnd, parseConfigText, type PolicyConfig } from './bastion-config.js';
import { formatPortRange } from './ports.js';
import { issueLines } from './errors.js';
import { selectorDocument } from './selector.js';

export type ParsedPolicies = { ok: true; policies: PolicyConfig[] } | { ok: false; errors: string[] };

/** Validate a policies document (`policies: [...]`, YAML or JSON) as the config file's policies are. */
export function parsePoliciesDocument(text: string, source: string): ParsedPolicies {
  const r = parseConfigText(text, source, { policiesOnly: true });
  if (!r.ok) return { ok: false, errors: issueLines(r.errors) };
  return { ok: true, policies: r.config.policies };
}

/** One policy's ends and ports as a person reads them (policy lists). */
export function describePolicy(p: PolicyConfig): { from: string; to: string; ports: string } {
  return { from: formatPolicyEnd(p.from), to: formatPolicyEnd(p.to), ports: p.ports?.length ? p.ports.map(formatPortRange).join(',') : 'any' };
}

/** A parsed policy back in the document form (what parsePoliciesDocument reads): parse(toDocument(p)) = p. */
export function toDocumentPolicy(p: PolicyConfig): Record<string, unknown> {
  const end = (x: PolicyConfig['from']): unknown => {
    if (x.kind === 'host') return 'host';
    if (x.kind === 'cidr') return { cidr: x.cidr, ...(x.except?.length ? { except: x.except } : {}) };
    return selectorDocument(x.selector);
  };
  return { name: p.name, from: end(p.from), to: end(p.to), ...(p.ports ? { ports: p.ports.map(formatPortRange) } : {}), ...(p.mode ? { mode: p.mode } : {}) };
}
