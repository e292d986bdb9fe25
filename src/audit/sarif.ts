/**
 * An audit report as a SARIF 2.1.0 log (OASIS), so that code-scanning tools
 * can show it: one run, the rule table as the tool's rules, one result per
 * finding. Findings about Kubernetes objects or config policies point at
 * their file (a physical location); findings about live objects (the engine,
 * a container) carry a logical location only: there is no file to point at.
 * test/unit/audit-sarif.test.ts validates the output against the official
 * schema (test/fixtures/sarif/sarif-schema-2.1.0.json).
 */
import { createHash } from 'node:crypto';
import type { AuditReport, Finding, Severity } from './findings.js';
import { RULE_IDS, cisText, rule, type RuleInfo } from './rules.js';

export const SARIF_SCHEMA_URI = 'https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json';

const LEVEL: Record<Severity, 'error' | 'warning' | 'note'> = {
  critical: 'error',
  high: 'error',
  medium: 'warning',
  low: 'note',
  info: 'note',
};

/** GitHub code scanning's security-severity scale (critical >= 9.0, high >= 7.0, medium >= 4.0, low > 0). */
const SECURITY_SEVERITY: Record<Severity, string> = {
  critical: '9.5',
  high: '8.0',
  medium: '5.5',
  low: '3.0',
  info: '0.0',
};

function sarifRule(r: RuleInfo) {
  return {
    id: r.id,
    name: r.id.replace(/[.-](\w)/g, (_m, c: string) => c.toUpperCase()),
    shortDescription: { text: r.title },
    fullDescription: { text: `${r.title}. Attacker gains: ${r.gain}` },
    help: {
      text: `Fix: ${r.fix}\nChecks: ${r.checks}${r.cis ? `\n${cisText(r.cis)}: ${r.cis.title}` : ''}`,
      markdown: `**Fix:** ${r.fix}\n\n**Checks:** ${r.checks}${r.cis ? `\n\n**${cisText(r.cis)}:** ${r.cis.title}` : ''}`,
    },
    defaultConfiguration: { level: LEVEL[r.severity] },
    properties: {
      tags: ['security', r.scope, ...(r.cis ? [cisText(r.cis)] : [])],
      'security-severity': SECURITY_SEVERITY[r.severity],
      severity: r.severity,
    },
  };
}

function location(f: Finding) {
  const logical = {
    logicalLocations: [
      {
        name: f.object.name,
        fullyQualifiedName: `${f.object.kind}/${f.object.name}${f.object.id ? `@${f.object.id}` : ''}`,
        kind: f.object.kind === 'container' || f.object.kind === 'pod' ? 'object' : 'resource',
      },
    ],
  };
  // "pods.yaml (document 2, items[0])" → pods.yaml
  const file = f.object.file?.replace(/ \([^)]*\)$/, '');
  if (!file) return logical;
  return { physicalLocation: { artifactLocation: { uri: encodeURI(file) } }, ...logical };
}

export function toSarif(report: AuditReport, toolVersion: string) {
  const index = new Map(RULE_IDS.map((id, i) => [id, i]));
  return {
    $schema: SARIF_SCHEMA_URI,
    version: '2.1.0' as const,
    runs: [
      {
        tool: {
          driver: {
            name: 'bastion-audit',
            version: toolVersion,
            rules: RULE_IDS.map((id) => sarifRule(rule(id))),
          },
        },
        invocations: [
          {
            executionSuccessful: true,
            endTimeUtc: report.generatedAt,
            ...(report.skipped.length
              ? {
                  toolExecutionNotifications: report.skipped.map((s) => ({
                    level: 'warning' as const,
                    message: { text: `not checked: ${s.check}: ${s.reason}` },
                  })),
                }
              : {}),
          },
        ],
        results: report.findings.map((f) => ({
          ruleId: f.id,
          ruleIndex: index.get(f.id)!,
          level: LEVEL[f.severity],
          message: {
            text: `${f.title}: ${f.object.name}. ${f.evidence.map((e) => `${e.field}: ${e.value}`).join('; ')}. Fix: ${f.fix}`,
          },
          locations: [location(f)],
          partialFingerprints: {
            'bastionFinding/v1': createHash('sha256')
              .update(`${f.id}\0${f.object.kind}\0${f.object.name}\0${f.evidence.map((e) => e.field).join('\0')}`)
              .digest('hex')
              .slice(0, 32),
          },
          properties: {
            severity: f.severity,
            gain: f.gain,
            evidence: f.evidence,
            fix: f.fix,
            ...(f.cis ? { cis: f.cis } : {}),
          },
        })),
      },
    ],
  };
}
