/** An audit report as text for a terminal: findings worst first, each with its evidence, gain and fix. */
import type { AuditReport, Finding, Severity } from './findings.js';
import { SEVERITIES } from './findings.js';

export interface Painter {
  bold(s: string): string;
  red(s: string): string;
  yellow(s: string): string;
  dim(s: string): string;
}

const plain: Painter = { bold: (s) => s, red: (s) => s, yellow: (s) => s, dim: (s) => s };

function paintSeverity(s: Severity, p: Painter): string {
  const label = s.toUpperCase().padEnd(8);
  return s === 'critical' || s === 'high' ? p.red(p.bold(label)) : s === 'medium' ? p.yellow(label) : label;
}

function objectText(f: Finding): string {
  const where = f.object.file ? ` [${f.object.file}]` : '';
  return `${f.object.kind} ${f.object.name}${f.object.id && f.object.id !== f.object.name ? ` (${f.object.id})` : ''}${where}`;
}

export function summaryLine(r: AuditReport): string {
  const parts = SEVERITIES.map((s) => `${r.summary[s]} ${s}`);
  return `${r.findings.length} finding${r.findings.length === 1 ? '' : 's'}: ${parts.join(', ')} (${r.sources.join(', ') || 'nothing audited'})`;
}

export function renderTable(r: AuditReport, p: Painter = plain): string {
  const out: string[] = [p.bold(summaryLine(r)), ''];
  for (const f of r.findings) {
    out.push(`${paintSeverity(f.severity, p)} ${p.bold(f.id)}  ${objectText(f)}`);
    out.push(`  ${f.title}`);
    f.evidence.forEach((e, i) => out.push(`  ${i === 0 ? 'evidence' : '        '}  ${e.field}: ${e.value}`));
    out.push(`  gains     ${f.gain}`);
    out.push(`  fix       ${f.fix}`);
    if (f.cis) out.push(`  ${p.dim(`CIS       ${f.cis}`)}`);
    out.push('');
  }
  if (r.skipped.length) {
    out.push(p.bold('Not checked'));
    for (const s of r.skipped) out.push(`  ${s.check}: ${s.reason}`);
    out.push('');
  }
  return out.join('\n');
}
