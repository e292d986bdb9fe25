/**
 * What the posture audit reports: findings, each an instance of one rule of
 * the rule table (./rules.ts) about one object, with the evidence that
 * triggered it. Pure types and helpers; no I/O.
 */

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** 0 for critical, 4 for info: lower is worse. */
export function severityRank(s: Severity): number {
  return SEVERITIES.indexOf(s);
}

/** Is `s` at least as bad as `threshold`? */
export function atLeast(s: Severity, threshold: Severity): boolean {
  return severityRank(s) <= severityRank(threshold);
}

export function isSeverity(v: string): v is Severity {
  return (SEVERITIES as readonly string[]).includes(v);
}

export type ObjectKind =
  | 'engine'
  | 'daemon'
  | 'container'
  | 'policy'
  | 'namespace'
  | 'pod'
  | 'role-binding'
  | 'cluster-role-binding';

/** The thing a finding is about. */
export interface AuditObject {
  kind: ObjectKind;
  /** "web", "docker engine", "ns/pod", "ns/binding" */
  name: string;
  /** a container's id (12 hex digits), when there is one */
  id?: string;
  /** the file the object was read from (Kubernetes objects, config policies) */
  file?: string;
}

/** The field that triggered a finding, and its value. */
export interface Evidence {
  /** "HostConfig.Privileged", "spec.hostNetwork", "runc version" */
  field: string;
  value: string;
}

export interface Finding {
  /** the rule's id, e.g. docker.container.privileged */
  id: string;
  severity: Severity;
  title: string;
  object: AuditObject;
  /** what an attacker gains */
  gain: string;
  evidence: Evidence[];
  /** how to make the finding go away */
  fix: string;
  /** "CIS Docker Benchmark v1.6.0 5.5", when the rule maps to one */
  cis?: string;
}

/** A check that could not be made, and why (never silently skipped). */
export interface Skipped {
  check: string;
  reason: string;
}

export interface AuditReport {
  /** ISO time */
  generatedAt: string;
  /** what was looked at: "docker", "kubernetes", "config" */
  sources: string[];
  findings: Finding[];
  /** checks that could not be made */
  skipped: Skipped[];
  /** about the input, not findings (a Kubernetes kind ignored, a namespace inferred) */
  warnings: string[];
  /** findings per severity */
  summary: Record<Severity, number>;
}

/** Findings sorted worst first, then by object and rule, so that reports are stable. */
export function sortFindings(findings: Finding[]): Finding[] {
  return [...findings].sort(
    (a, b) =>
      severityRank(a.severity) - severityRank(b.severity) ||
      cmp(a.object.kind, b.object.kind) ||
      cmp(a.object.name, b.object.name) ||
      cmp(a.id, b.id) ||
      cmp(JSON.stringify(a.evidence), JSON.stringify(b.evidence)),
  );
}

export function summarize(findings: readonly Finding[]): Record<Severity, number> {
  const out = Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<Severity, number>;
  for (const f of findings) out[f.severity]++;
  return out;
}

export function makeReport(sources: string[], findings: Finding[], skipped: Skipped[], warnings: string[] = [], now = new Date()): AuditReport {
  const sorted = sortFindings(findings);
  return { generatedAt: now.toISOString(), sources, findings: sorted, skipped, warnings, summary: summarize(sorted) };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
