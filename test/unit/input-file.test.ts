/**
 * Input files (config, policies documents, Compose, Kubernetes objects):
 * what is refused before reading, and that errors quote at most a short
 * excerpt of what was read. A config path that is a symlink to /etc/shadow
 * used to put every line of it into the log, stderr and the API answer.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputFileError, readInputFile } from '../../src/policy/input-file.js';
import { loadConfigSource } from '../../src/daemon/config-source.js';
import { parsePoliciesDocument } from '../../src/daemon/runtime-policies.js';
import { parseText, K8sInputError, loadCluster } from '../../src/policy/k8s/objects.js';
import { ComposeError, parseCompose } from '../../src/policy/compose.js';
import { ERRORS_MAX, EXCERPT_MAX, quote } from '../../src/policy/errors.js';

const SECRET = 'S3CRETHASHVALUEqwertyuiopasdfghjklzxcvbnm0123456789';
/** an /etc/shadow look-alike: every line carries the secret */
const SHADOW = Array.from({ length: 30 }, (_, i) => `user${i}:$6$saltsalt$${SECRET}${i}:19000:0:99999:7:::`).join('\n') + '\n';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'bastion-input-'));
  chmodSync(dir, 0o755);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function problemOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof InputFileError, `InputFileError expected, got ${String(e)}`);
    return `${e.problem}: ${e.message}`;
  }
  return 'read';
}

describe('readInputFile refuses what is not a regular file of a trusted owner', () => {
  const o = { maxBytes: 1024 };

  it('reads a regular file of root, also through a symlink', () => {
    const f = join(dir, 'ok.yaml');
    writeFileSync(f, 'policies: []\n', { mode: 0o644 });
    symlinkSync(f, join(dir, 'link.yaml'));
    assert.equal(readInputFile(f, o), 'policies: []\n');
    assert.equal(readInputFile(join(dir, 'link.yaml'), o), 'policies: []\n');
  });

  it('a FIFO, a device, a directory: refused without blocking or reading', () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    assert.match(problemOf(() => readInputFile(fifo, o)), /^refused: .*a FIFO, not a regular file/);
    assert.match(problemOf(() => readInputFile('/dev/zero', o)), /^refused: .*a character device/);
    assert.match(problemOf(() => readInputFile(dir, o)), /^refused: .*a directory/);
  });

  it('a file owned by another user, or writable by everyone: refused, saying why', () => {
    const theirs = join(dir, 'theirs.yaml');
    writeFileSync(theirs, 'policies: []\n');
    chownSync(theirs, 65534, 65534);
    assert.match(problemOf(() => readInputFile(theirs, { ...o, owners: new Set([0]) })), /^refused: .*owned by uid 65534, not by root/);
    // the invoking user behind sudo may own it
    assert.equal(readInputFile(theirs, { ...o, owners: new Set([0, 65534]) }), 'policies: []\n');
    const open = join(dir, 'open.yaml');
    writeFileSync(open, 'policies: []\n');
    chmodSync(open, 0o666);
    assert.match(problemOf(() => readInputFile(open, o)), /^refused: .*writable by every user \(mode 666\)/);
  });

  it('over the size limit: refused before reading, naming the limit and how to raise it', () => {
    const big = join(dir, 'big.yaml');
    writeFileSync(big, 'x'.repeat(5000));
    assert.match(problemOf(() => readInputFile(big, { maxBytes: 1024, limitHint: '--max-config-size' })), /^too-large: .*4\.9 KiB, over the limit of 1 KiB \(raise it with --max-config-size\)/);
  });

  it('missing: a failure to read, not invalid input', () => {
    assert.match(problemOf(() => readInputFile(join(dir, 'none.yaml'), o)), /^missing: .*cannot read: no such file \(ENOENT\)/);
  });
});

/** No error line may carry more of the input than an excerpt. */
function assertNoLeak(lines: string[]): void {
  const all = lines.join('\n');
  assert.ok(!all.includes(SECRET.slice(0, EXCERPT_MAX)), `the errors carry the secret:\n${all}`);
  assert.ok(lines.length <= ERRORS_MAX + 1, `at most ${ERRORS_MAX} errors and a count: ${lines.length}`);
}

describe('errors quote at most a short excerpt of the input', () => {
  it('a config path that leads to a shadow-like file: one error, no line of it', async () => {
    const shadow = join(dir, 'shadow');
    writeFileSync(shadow, SHADOW, { mode: 0o600 });
    const link = join(dir, 'config-link.yaml');
    symlinkSync(shadow, link);
    const r = await loadConfigSource(link, { containersRequired: true });
    assert.ok(!r.ok);
    assertNoLeak(r.errors);
    assert.equal(r.errors.length, 1);
    assert.match(r.errors[0]!, /not a Bastion config file/);
    assert.ok(!r.errors[0]!.includes('user0'), 'not even the first key');
  });

  it('a one-line text file (passwd-like) as the config: says what it is, not what it says', async () => {
    const f = join(dir, 'passwd');
    writeFileSync(f, `root:x:0:0:${SECRET}:/root:/bin/bash\n`);
    const r = await loadConfigSource(f, { containersRequired: true });
    assert.ok(!r.ok);
    assertNoLeak(r.errors);
    assert.match(r.errors[0]!, /got a text of \d+ characters/);
  });

  it('long values in fields are cut to an excerpt; many errors are counted, not all listed', () => {
    const doc = { policies: Array.from({ length: 60 }, (_, i) => ({ name: `${SECRET}!${i}`, from: { app: SECRET }, to: { cidr: `${SECRET}/8` }, ports: [`${SECRET}/tcp`] })) };
    const r = parsePoliciesDocument(JSON.stringify(doc), 'p.json');
    assert.ok(!r.ok);
    assertNoLeak(r.errors);
    assert.match(r.errors.at(-1)!, /^\.\.\. and \d+ more errors$/);
  });

  it('Kubernetes objects: a YAML error gives its line, not the code frame', () => {
    const text = `apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  password: "${SECRET}\n`;
    try {
      loadCluster([{ text, file: 'k.yaml' }]);
      assert.fail('no error');
    } catch (e) {
      assert.ok(e instanceof K8sInputError);
      assertNoLeak(e.message.split('\n'));
      assert.match(e.message, /k\.yaml.*YAML:/);
    }
    assert.throws(() => parseText(`- ${SECRET}: [\n`, 'k.yaml'), (e: Error) => !e.message.includes(SECRET.slice(0, EXCERPT_MAX)));
  });

  it('Compose: invalid values are excerpts', () => {
    const text = `services:\n  web:\n    ports: ["${SECRET}:80"]\n    depends_on: [${SECRET}]\n`;
    try {
      parseCompose(text, { file: 'c.yaml' });
      assert.fail('no error');
    } catch (e) {
      assert.ok(e instanceof ComposeError);
      assertNoLeak(e.message.split('\n'));
    }
  });

  it('quote() keeps short values whole and cuts long ones', () => {
    assert.equal(quote('80/tcpx'), '"80/tcpx"');
    assert.equal([...JSON.parse(quote('é'.repeat(100)))].length, EXCERPT_MAX);
    assert.equal(quote('a\nb'), '"a\\nb"');
  });
});
