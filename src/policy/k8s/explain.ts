/**
 * `bastion k8s explain`: a verdict and the reasons for it, as text or JSON.
 */
import { describePeer, describePort, type DirectionVerdict, type Verdict } from './engine.js';
import { rulePeers, type Cluster } from './objects.js';

export interface Explanation extends Verdict {
  /** one sentence: why allowed or denied */
  reason: string;
}

export function summarize(v: Verdict): string {
  if (v.resolvedPort === undefined) return v.notes[0] ?? 'the port does not resolve on the server';
  const parts: string[] = [];
  for (const d of [v.egress, v.ingress]) {
    if (!d.isolated) parts.push(`${d.pod} is not isolated for ${d.direction}`);
    else if (d.allowed) {
      const m = d.allowedBy[0]!;
      parts.push(`${d.direction} of ${d.pod} allowed by ${m.policy} ${m.direction}[${m.rule}]`);
    } else parts.push(`no ${d.direction} rule of ${d.policies.join(', ')} allows it`);
  }
  return `${v.allowed ? 'allowed' : 'denied'}: ${parts.join('; ')}`;
}

export function explain(v: Verdict): Explanation {
  return { ...v, reason: summarize(v) };
}

function directionText(cluster: Cluster, v: Verdict, d: DirectionVerdict): string[] {
  const side = d.direction === 'egress' ? 'client' : 'server';
  const lines: string[] = [];
  if (!d.isolated) {
    lines.push(
      `${d.direction} of ${d.pod} (${side}): allowed: not isolated (no NetworkPolicy with policyType ${cap(d.direction)} selects it)`,
    );
    return lines;
  }
  lines.push(
    `${d.direction} of ${d.pod} (${side}): ${d.allowed ? 'allowed' : 'DENIED'}: isolated by ${d.policies.join(', ')}`,
  );
  const server = cluster.pods.find((p) => p.key === v.to);
  for (const r of d.rules) {
    const policy = cluster.policies.find((p) => p.key === r.policy);
    const rule = policy ? (d.direction === 'ingress' ? policy.ingress[r.rule] : policy.egress[r.rule]) : undefined;
    const peers = rule ? rulePeers(rule) : undefined;
    const peerWord = d.direction === 'ingress' ? 'from' : 'to';
    const head = `  ${r.policy} ${d.direction}[${r.rule}]`;
    if (r.allows) {
      const m = d.allowedBy.find((a) => a.policy === r.policy && a.rule === r.rule)!;
      const peer = m.peer === null ? m.peerText : `${peerWord}[${m.peer}] ${m.peerText}`;
      const port = m.port === null ? m.portText : `ports[${m.port}] ${m.portText}`;
      lines.push(`${head}: ALLOWS: ${peer}; ${port}`);
      continue;
    }
    const why: string[] = [];
    if (r.peersMatched.length === 0 && policy)
      why.push(
        `${v[d.direction === 'ingress' ? 'from' : 'to']} matches none of ${peerWord}: ${(peers ?? [])
          .map((p) => describePeer(p, policy.namespace))
          .join(' | ')}`,
      );
    if (r.portsMatched.length === 0)
      why.push(
        `${v.protocol}/${v.port} matches none of ports: ${(rule?.ports ?? []).map((p) => describePort(p, server)).join(' | ')}`,
      );
    lines.push(`${head}: no: ${why.join('; ')}`);
  }
  if (d.policies.length > 0 && d.rules.length === 0)
    lines.push(`  (the isolating policies have no ${d.direction} rules: they allow nothing)`);
  return lines;
}

const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);

/** Human-readable explanation. */
export function formatExplanation(cluster: Cluster, v: Verdict): string {
  const port =
    typeof v.port === 'string'
      ? `${v.protocol} ${v.port}${v.resolvedPort !== undefined ? ` (=${v.resolvedPort})` : ''}`
      : `${v.protocol} ${v.port}`;
  const lines = [
    `${v.from}${v.clientIP ? ` (${v.clientIP})` : ''} -> ${v.to}${v.serverIP ? ` (${v.serverIP})` : ''} ${port}: ${
      v.allowed ? 'ALLOWED' : 'DENIED'
    }`,
    ...v.notes.map((n) => `note: ${n}`),
    ...directionText(cluster, v, v.egress),
    ...directionText(cluster, v, v.ingress),
    `verdict: ${summarize(v)}`,
  ];
  return lines.join('\n') + '\n';
}
