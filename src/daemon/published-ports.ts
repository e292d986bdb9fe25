/**
 * The policies of published ports (src/policy/published.ts), per platform
 * endpoint: what a container's `docker run -p` lets in, kept next to the
 * config file's and the runtime policies, so that a config reload keeps
 * them, `policy list` shows them (source: platform) and `status` says what
 * is published and from where it is reachable.
 */
import type { EndpointSpec } from '../manager/endpoint.js';
import type { Rule } from '../policy/model.js';
import { policyToRules, type PolicyConfig } from '../policy/bastion-config.js';
import { publishedAccess, publishedPolicies, type PublishedPortsMode } from '../policy/published.js';
import { BUILTIN_LABELS } from '../policy/model.js';
import { policyRow } from './runtime-policies.js';
import type { PolicyRow, PublishedStatus } from '../api/types.js';
import { portsText } from './status.js';

interface Entry {
  name: string;
  spec: EndpointSpec;
  policies: PolicyConfig[];
  rules: Rule[];
}

export class PublishedPortPolicies {
  private readonly byKey = new Map<string, Entry>();

  constructor(readonly mode: PublishedPortsMode = 'allow') {}

  /** An endpoint's published ports now; returns the rules that change (none when nothing did). */
  set(spec: EndpointSpec): { added: Rule[]; removed: Rule[] } {
    const old = this.byKey.get(spec.key);
    // the endpoint's own labels (container and network): the rule applies to that interface only
    const labels: Record<string, string> = { [BUILTIN_LABELS.name]: spec.labels[BUILTIN_LABELS.name] ?? spec.name };
    if (spec.labels['bastion.io/network'] !== undefined) labels['bastion.io/network'] = spec.labels['bastion.io/network'];
    const policies = publishedPolicies(spec.name, labels, spec.published ?? [], this.mode);
    if (old && JSON.stringify(old.policies) === JSON.stringify(policies)) {
      old.spec = spec;
      return { added: [], removed: [] };
    }
    const rules = policies.flatMap(policyToRules);
    // kept while it publishes anything, even in deny mode: status says what is published
    if (spec.published?.length) this.byKey.set(spec.key, { name: spec.name, spec, policies, rules });
    else this.byKey.delete(spec.key);
    return { added: rules, removed: old?.rules ?? [] };
  }

  /** The endpoint is gone: the rules that leave. */
  delete(key: string): Rule[] {
    const old = this.byKey.get(key);
    this.byKey.delete(key);
    return old?.rules ?? [];
  }

  keys(): string[] {
    return [...this.byKey.keys()];
  }

  rules(): Rule[] {
    const out: Rule[] = [];
    for (const e of this.byKey.values()) for (const r of e.rules) out.push(r);
    return out;
  }

  rows(): PolicyRow[] {
    const out: PolicyRow[] = [];
    for (const e of this.byKey.values()) for (const p of e.policies) out.push(policyRow(p, 'platform'));
    return out;
  }

  /** For status: what each container publishes, and from where it is let in. */
  status(): PublishedStatus {
    const ports: PublishedStatus['ports'] = [];
    for (const e of this.byKey.values()) {
      const { fromHost, fromOutside } = publishedAccess(e.spec.published ?? [], this.mode);
      ports.push({ container: e.name, fromHost: portsText(fromHost), fromOutside: fromOutside.length ? portsText(fromOutside) : 'none' });
    }
    return { mode: this.mode, ports: ports.sort((a, b) => a.container.localeCompare(b.container)) };
  }
}
