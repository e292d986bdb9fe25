/**
 * docs/audit.md's list of checks, generated from the rule table (./rules.ts)
 * between two markers. test/unit/audit-docs.test.ts fails when the file and
 * the table differ; `node dist/src/audit/docs.js` rewrites the section.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RULE_IDS, cisText, rule, type RuleScope } from './rules.js';

export const BEGIN = '<!-- rules:begin (generated from src/audit/rules.ts by `node dist/src/audit/docs.js`; do not edit) -->';
export const END = '<!-- rules:end -->';

const SCOPES: Array<[RuleScope, string]> = [
  ['docker-engine', 'Docker engine'],
  ['docker-container', 'Docker containers'],
  ['bastion', 'Bastion coverage'],
  ['kubernetes', 'Kubernetes objects'],
];

const cell = (s: string) => s.replace(/\|/g, '\\|');

export function renderRules(): string {
  const out: string[] = [BEGIN, ''];
  out.push('| check | severity | CIS | finds |', '|---|---|---|---|');
  for (const id of RULE_IDS) {
    const r = rule(id);
    out.push(`| [\`${r.id}\`](#${anchor(r.id)}) | ${r.severity} | ${r.cis ? `${r.cis.benchmark === 'docker' ? 'Docker' : 'Kubernetes'} ${r.cis.item}` : '-'} | ${cell(r.title)} |`);
  }
  for (const [scope, heading] of SCOPES) {
    out.push('', `### ${heading}`);
    for (const id of RULE_IDS.filter((x) => rule(x).scope === scope)) {
      const r = rule(id);
      out.push('', `#### ${r.id}`, '');
      out.push(`**${r.severity}**: ${r.title}.${r.cis ? ` ${cisText(r.cis)}: *${r.cis.title}*.` : ' No CIS item.'}`, '');
      out.push(`- **Checks (what a finding proves):** ${r.checks}.`);
      out.push(`- **Attacker gains:** ${r.gain}.`);
      out.push(`- **Fix:** ${r.fix}.`);
      if (r.lowered) out.push(`- **Lower severity:** ${r.lowered}.`);
    }
  }
  out.push('', END);
  return out.join('\n');
}

/** GitHub's heading anchor for "#### docker.container.cap-all". */
function anchor(id: string): string {
  return id.toLowerCase().replace(/[^a-z0-9 _-]/g, '');
}

/** The file with its generated section replaced. */
export function withRules(doc: string): string {
  const b = doc.indexOf('<!-- rules:begin');
  const e = doc.indexOf(END);
  if (b < 0 || e < b) throw new Error('docs/audit.md: the rules markers are missing');
  return doc.slice(0, b) + renderRules() + doc.slice(e + END.length);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = new URL('../../../docs/audit.md', import.meta.url);
  writeFileSync(file, withRules(readFileSync(file, 'utf8')));
}
