/**
 * The one issue type and its formatter (src/policy/errors.ts): every front
 * end's errors (config file, policies documents, selectors, Compose,
 * Kubernetes objects, input files) are issues, and the line a user reads is
 * formatIssue's. The lines are the ones each front end printed before it
 * shared the formatter.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { InvalidInput, formatIssue, formatOrigin, formatPath, type Issue, type PathSegment } from '../../src/policy/errors.js';
import { parseConfigText } from '../../src/policy/bastion-config.js';
import { ComposeError, parseCompose } from '../../src/policy/compose.js';
import { K8sInputError, loadCluster } from '../../src/policy/k8s/objects.js';
import { compileToPolicySet } from '../../src/policy/k8s/compile.js';
import { parsePoliciesDocument } from '../../src/daemon/runtime-policies.js';
import { InputFileError } from '../../src/policy/input-file.js';

function thrown(f: () => unknown): Issue[] {
  try {
    f();
  } catch (e) {
    if (e instanceof InvalidInput) return e.issues;
    throw e;
  }
  assert.fail('expected InvalidInput');
}

describe('formatIssue', () => {
  it('prints each front end as it printed before', () => {
    const lines: Array<[Issue, string]> = [
      [{ code: 'invalid-value', file: 'config.yaml', path: ['policies', 1, 'ports', 0], object: { name: 'web-to-api', at: 2 }, line: 9, message: 'm' }, 'config.yaml: policies[1] (web-to-api).ports[0]: m'],
      [{ code: 'invalid-value', file: 'config.yaml', path: ['containers', 0, 'labels', 'bastion.io/name'], object: { name: 'web', at: 2 }, message: 'm' }, 'config.yaml: containers[0] (web).labels["bastion.io/name"]: m'],
      [{ code: 'syntax', file: 'config.yaml', path: [], line: 7, message: 'YAML syntax error: x' }, 'config.yaml: line 7: YAML syntax error: x'],
      [{ code: 'file', file: '/etc/b.yaml', path: [], message: 'cannot read: no such file (ENOENT)' }, '/etc/b.yaml: cannot read: no such file (ENOENT)'],
      [{ code: 'unresolved', file: 'c.yaml', path: ['services', 'web', 'depends_on', 1], pathStyle: 'dotted', line: 6, column: 9, message: 'm' }, 'c.yaml:6:9: services.web.depends_on[1]: m'],
      [{ code: 'invalid-value', file: 'c.yaml', path: ['services', 'my.db', 'expose', 0], pathStyle: 'dotted', message: 'm' }, 'c.yaml: services.my.db.expose[0]: m'],
      [{ code: 'syntax', file: 'c.yaml', path: [], line: 2, column: 3, message: 'invalid YAML: x' }, 'c.yaml:2:3: invalid YAML: x'],
      [{ code: 'invalid-value', file: 'p.yaml', document: 3, path: ['spec', 'egress', 0, 'to', 0, 'ipBlock', 'cidr'], object: { name: 'NetworkPolicy x/allow', at: 0 }, pathStyle: 'dotted', message: 'm' }, 'p.yaml (document 3): NetworkPolicy x/allow: spec.egress[0].to[0].ipBlock.cidr: m'],
      [{ code: 'invalid-value', file: 'a.json', item: 2, path: ['metadata', 'labels', { key: 'app' }], object: { name: 'Pod x/a', at: 0 }, pathStyle: 'dotted', message: 'm' }, 'a.json (items[2]): Pod x/a: metadata.labels[app]: m'],
      [{ code: 'not-a-document', path: [], object: { name: 'document', at: 0 }, message: 'm' }, 'document: m'],
      [{ code: 'invalid-value', path: [], message: 'm' }, 'm'],
    ];
    for (const [issue, line] of lines) assert.equal(formatIssue(issue), line);
  });

  it('paths: the two styles agree on identifiers and indexes; Bastion quotes other keys (property)', () => {
    const ident = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_-]{0,8}$/);
    const seg = fc.oneof(ident, fc.nat({ max: 99 }));
    fc.assert(
      fc.property(fc.array(seg, { maxLength: 6 }), (path) => {
        assert.equal(formatPath(path, 'bastion'), formatPath(path, 'dotted'));
      }),
    );
    // the Bastion form reads back to the same segments, whatever the keys
    const anyKey = fc.oneof(ident, fc.string({ maxLength: 8 }));
    const readBack = (s: string): PathSegment[] => {
      const out: PathSegment[] = [];
      const re = /(?:^|\.)([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/gy;
      let m: RegExpExecArray | null;
      while (re.lastIndex < s.length && (m = re.exec(s))) out.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : (JSON.parse(m[3]!) as string)));
      assert.equal(re.lastIndex, s.length, `unread: ${s.slice(re.lastIndex)}`);
      return out;
    };
    fc.assert(
      fc.property(fc.array(fc.oneof(anyKey, fc.nat({ max: 99 })), { maxLength: 6 }), (path) => {
        assert.deepEqual(readBack(formatPath(path, 'bastion')), path);
      }),
    );
  });

  it('origin: file, position, document and item', () => {
    assert.equal(formatOrigin({ file: 'f' }), 'f');
    assert.equal(formatOrigin({ file: 'f', line: 3 }), 'f');
    assert.equal(formatOrigin({ file: 'f', line: 3, column: 4 }), 'f:3:4');
    assert.equal(formatOrigin({ file: 'f', document: 2, item: 0 }), 'f (document 2, items[0])');
    assert.equal(formatOrigin({ document: 2 }), 'document 2');
    assert.equal(formatOrigin({}), undefined);
  });
});

describe('every front end reports issues', () => {
  it('config file and policies documents: codes, paths, objects, lines', () => {
    const r = parseConfigText('mode: enforce\ncontainers:\n  - { name: web, netns: web, labels: { "-x": y } }\npolicies:\n  - { name: p, from: { app: web }, to: host, port: 1 }\n', 'c.yaml');
    assert.ok(!r.ok);
    assert.deepEqual(
      r.errors.map((e) => [e.code, formatIssue(e)]),
      [
        ['invalid-value', 'c.yaml: containers[0] (web).labels["-x"]: "-x" is not a valid label key: the name must consist of alphanumerics, \'-\', \'_\' or \'.\', and start and end with an alphanumeric'],
        ['unknown-field', 'c.yaml: policies[0] (p): unknown field "port" (did you mean "ports"?)'],
      ],
    );
    assert.equal(r.errors[1]!.line, 5);
    const d = parsePoliciesDocument('mode: audit\npolicies: []\n', 'doc');
    assert.deepEqual(d, { ok: false, errors: ["doc: mode: not allowed here: this document only adds policies; mode belongs in the daemon's config file", 'doc: policies: empty: give at least one policy'] });
  });

  it('Compose: dotted paths with line and column', () => {
    const issues = thrown(() => parseCompose('services:\n  a:\n    depends_on: [nosuch]\n', { file: 'c.yaml' }));
    assert.equal(issues[0]!.code, 'unresolved');
    assert.deepEqual(issues[0]!.path, ['services', 'a', 'depends_on', 0]);
    assert.throws(() => parseCompose('services:\n  a:\n    depends_on: [nosuch]\n', { file: 'c.yaml' }), (e: unknown) => e instanceof ComposeError && e.message === 'c.yaml:3:18: services.a.depends_on[0]: service "nosuch" is not defined in services');
  });

  it('Kubernetes objects and the k8s compiler: the object, then the field', () => {
    const text = 'apiVersion: v1\nkind: Pod\nmetadata: { name: a, namespace: x, labels: { app: "-bad" } }\n';
    const issues = thrown(() => loadCluster([{ file: 'p.yaml', text }]));
    assert.deepEqual(issues.map(formatIssue), [
      `p.yaml: Pod x/a: metadata.labels[app]: invalid label value "-bad": a label value must be empty or consist of alphanumerics, '-', '_' or '.', and must start and end with an alphanumeric`,
    ]);
    const cluster = loadCluster([{ text: 'apiVersion: v1\nkind: Pod\nmetadata: { name: a, namespace: x, labels: { bastion.io/x: y } }\n' }]);
    assert.throws(
      () => compileToPolicySet(cluster),
      (e: unknown) => e instanceof K8sInputError && e.message === 'Pod x/a: metadata.labels[bastion.io/x]: label keys under "bastion.io/" are reserved for Bastion',
    );
  });

  it('input files: the file as a whole', () => {
    const e = new InputFileError('/x', 'refused: it is a FIFO, not a regular file', 'refused');
    assert.deepEqual(e.issue, { code: 'file', file: '/x', path: [], message: 'refused: it is a FIFO, not a regular file' });
    assert.equal(e.message, formatIssue(e.issue));
  });
});
