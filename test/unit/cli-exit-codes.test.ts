/**
 * The exit codes the README promises (0 ok, 1 failure, 2 usage, 3 invalid
 * input, 4 daemon not running), and that `-o` prints what it says, for the
 * commands that need no daemon: the compiled CLI, run as a child process,
 * with a pin path no daemon owns (so "no daemon" is a fact, not a guess).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const main = path.join(root, 'dist/src/cli/main.js');
const noDaemonPin = `/sys/fs/bpf/bastion-t${randomBytes(4).toString('hex')}`;
const runDir = mkdtempSync(path.join(tmpdir(), 'bastion-cli-'));

function bastion(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [main, ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', BASTION_RUN_DIR: runDir, BASTION_PIN_PATH: '', ...env },
    timeout: 20_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

process.on('exit', () => rmSync(runDir, { recursive: true, force: true }));

describe('CLI exit codes', () => {
  for (const args of [
    ['bogus-command'],
    ['status', '--bogus'],
    ['status', '-o', 'xml'],
    ['policy', 'list', '-o', 'xml'],
    ['flows', '-o', 'xml'],
    ['down', '-o', 'xml', '--pin-path', noDaemonPin],
    ['compose', 'x.yaml', '-o', 'table'],
    ['flows', '--verdict', 'BOGUS', '--pin-path', noDaemonPin],
    ['flows', '-n', 'abc', '--pin-path', noDaemonPin],
    ['flows', '-n', '-3', '--pin-path', noDaemonPin],
    ['flows', '-n', '1.5', '--pin-path', noDaemonPin],
    ['run', '--config', 'x.yaml', '--max-config-size', 'lots'],
  ]) {
    it(`usage error: bastion ${args.join(' ')} exits 2 and says why`, () => {
      const r = bastion(args);
      assert.equal(r.code, 2, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, /unknown|invalid|not one of|expected|allowed|integer|size/i);
      assert.equal(r.stdout, '', 'nothing on stdout');
    });
  }

  it('--verdict is case-insensitive and checked before the daemon is asked', () => {
    const r = bastion(['flows', '--verdict', 'dropped', '--pin-path', noDaemonPin]);
    assert.equal(r.code, 4, r.stderr);
  });

  for (const args of [
    ['status', '--pin-path', noDaemonPin],
    ['flows', '--pin-path', noDaemonPin],
    ['flows', '--follow', '--pin-path', noDaemonPin],
    ['policy', 'list', '--pin-path', noDaemonPin],
    ['policy', 'delete', 'x', '--pin-path', noDaemonPin],
  ]) {
    it(`no daemon: bastion ${args.join(' ')} exits 4`, () => {
      const r = bastion(args);
      assert.equal(r.code, 4, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr + r.stdout, /no daemon|not running/);
    });
  }

  it('an unreadable Compose file is a failure to read (1), an invalid one is invalid input (3)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bastion-cli-'));
    try {
      assert.equal(bastion(['compose', path.join(dir, 'missing.yaml')]).code, 1);
      const bad = path.join(dir, 'bad.yaml');
      writeFileSync(bad, 'services:\n  web:\n    depends_on: [nope]\n');
      assert.equal(bastion(['compose', bad]).code, 3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('BASTION_PIN_PATH', () => {
  it('is the default pin path of every command that takes --pin-path, and --help says so', () => {
    for (const cmd of [['run'], ['status'], ['flows'], ['down'], ['policy', 'add'], ['policy', 'list'], ['policy', 'delete']]) {
      const help = bastion([...cmd, '--help']);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /BASTION_PIN_PATH/, `${cmd.join(' ')} --help names BASTION_PIN_PATH`);
    }
    const r = bastion(['status', '-o', 'json'], { BASTION_PIN_PATH: noDaemonPin });
    assert.equal(r.code, 4);
    assert.equal(JSON.parse(r.stdout).pinPath, noDaemonPin);
    // the flag wins over the variable
    const other = `${noDaemonPin}x`;
    const r2 = bastion(['status', '-o', 'json', '--pin-path', other], { BASTION_PIN_PATH: noDaemonPin });
    assert.equal(JSON.parse(r2.stdout).pinPath, other);
  });
});

describe('-o yaml prints YAML', () => {
  it('status without a daemon', () => {
    const r = bastion(['status', '-o', 'yaml', '--pin-path', noDaemonPin]);
    assert.equal(r.code, 4);
    assert.equal(parseYaml(r.stdout).reason, 'daemon not running');
  });
  it('compose', () => {
    const r = bastion(['compose', 'test/fixtures/compose/shop.compose.yaml', '-o', 'yaml']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Array.isArray(parseYaml(r.stdout).policies));
  });
});

describe('large answers', () => {
  it('formatTable lays out 1,000,000 rows without overflowing the stack (Math.max(...column) did at 250,000)', async () => {
    const { formatTable } = await import('../../src/cli/output.js');
    const rows = Array.from({ length: 1_000_000 }, (_, i) => [`policy-${i}`, 'file', 'app=web']);
    const text = formatTable(['NAME', 'SOURCE', 'FROM'], rows);
    assert.equal(text.split('\n').length, 1_000_002);
    assert.ok(text.startsWith('NAME           SOURCE  FROM\npolicy-0       file    app=web\n'), text.slice(0, 80));
  });
});
