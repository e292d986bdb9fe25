/**
 * SARIF output against the official SARIF 2.1.0 JSON schema (OASIS, errata
 * 01; a draft-04 schema, hence ajv-draft-04), with a report holding a finding
 * of every rule; docs/audit.md against the rule table.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import AjvDraft04 from 'ajv-draft-04';
import ajvFormats from 'ajv-formats';

// CommonJS modules: under NodeNext their default export is module.exports, the class is its .default
const Ajv = AjvDraft04.default;
const addFormats = ajvFormats.default;
import { toSarif } from '../../src/audit/sarif.js';
import { makeReport } from '../../src/audit/findings.js';
import { RULE_IDS, finding, rule } from '../../src/audit/rules.js';
import { renderRules, withRules } from '../../src/audit/docs.js';

const schema = JSON.parse(readFileSync('test/fixtures/sarif/sarif-schema-2.1.0.json', 'utf8')) as object;

function validator() {
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  return ajv.compile(schema);
}

describe('audit: SARIF 2.1.0', () => {
  const report = makeReport(
    ['docker', 'kubernetes'],
    RULE_IDS.map((id, i) =>
      finding(
        id,
        rule(id).scope === 'kubernetes'
          ? { kind: 'pod', name: `ns/pod-${i}`, file: `objects dir/pods.yaml (document ${i + 1})` }
          : { kind: 'container', name: `c${i}`, id: '0123456789ab' },
        [{ field: 'HostConfig.Privileged', value: 'true' }],
      ),
    ),
    [{ check: 'dockerd flags', reason: 'remote engine' }],
  );
  const log = toSarif(report, '0.1.0');

  it('validates against the official schema', () => {
    const validate = validator();
    const ok = validate(log);
    assert.ok(ok, JSON.stringify(validate.errors, null, 2));
  });

  it('the schema check is real: a log missing a required property or with an unknown level fails', () => {
    const validate = validator();
    const broken = structuredClone(log) as { runs: Array<{ results: Array<Record<string, unknown>>; tool?: unknown }> };
    broken.runs[0]!.results[0]!.level = 'fatal';
    assert.equal(validate(broken), false);
    const noTool = structuredClone(log) as { runs: Array<{ tool?: unknown }> };
    delete noTool.runs[0]!.tool;
    assert.equal(validate(noTool), false);
  });

  it('one rule per check, results point at their rule, files are physical locations', () => {
    const run = log.runs[0]!;
    assert.deepEqual(run.tool.driver.rules.map((r) => r.id), [...RULE_IDS]);
    for (const r of run.results) assert.equal(run.tool.driver.rules[r.ruleIndex]!.id, r.ruleId);
    const k8s = run.results.find((r) => r.ruleId.startsWith('k8s.'))!;
    assert.equal((k8s.locations[0] as { physicalLocation?: { artifactLocation: { uri: string } } }).physicalLocation?.artifactLocation.uri, 'objects%20dir/pods.yaml');
    const priv = run.results.find((r) => r.ruleId === 'docker.container.privileged')!;
    assert.equal(priv.level, 'error');
    assert.equal(run.tool.driver.rules[priv.ruleIndex]!.properties['security-severity'], '9.5');
    assert.ok(!('physicalLocation' in priv.locations[0]!));
  });
});

describe('docs/audit.md', () => {
  it('lists every check as the rule table says (regenerate: node dist/src/audit/docs.js)', () => {
    const doc = readFileSync('docs/audit.md', 'utf8');
    assert.equal(doc, withRules(doc), 'docs/audit.md differs from the rule table');
    for (const id of RULE_IDS) assert.ok(renderRules().includes(`#### ${id}`));
  });
});
