/**
 * The systemd unit grants exactly the capabilities the daemon is known to
 * need (src/daemon/capabilities.ts, which the integration tests run every
 * daemon with), keeps the usual hardening, and passes systemd-analyze.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAEMON_CAPABILITIES, effectiveCapabilities, missingCapabilities } from '../../src/daemon/capabilities.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const UNIT = join(ROOT, 'contrib/systemd/bastion.service');
const text = readFileSync(UNIT, 'utf8');

function setting(name: string): string[] {
  return [...text.matchAll(new RegExp(`^${name}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());
}

describe('contrib/systemd/bastion.service', () => {
  it('grants exactly the daemon capabilities, bounding and ambient', () => {
    const want = DAEMON_CAPABILITIES.map((c) => c.name).sort();
    assert.deepEqual(setting('CapabilityBoundingSet').flatMap((v) => v.split(/\s+/)).sort(), want);
    assert.deepEqual(setting('AmbientCapabilities').flatMap((v) => v.split(/\s+/)).sort(), want);
  });

  it('keeps the usual hardening', () => {
    for (const [k, v] of [
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['RestrictNamespaces', 'net'],
      ['RuntimeDirectory', 'bastion'],
      ['RuntimeDirectoryPreserve', 'yes'],
    ]) assert.deepEqual(setting(k!), [v], k);
    assert.match(setting('RestrictAddressFamilies')[0]!, /AF_UNIX/);
    assert.match(setting('RestrictAddressFamilies')[0]!, /AF_NETLINK/);
    assert.match(setting('ReadWritePaths').join(' '), /\/sys\/fs\/bpf/);
    // the flow history lives under /var/lib/bastion (src/api/paths.ts STATE_DIR)
    assert.deepEqual(setting('StateDirectory'), ['bastion']);
    assert.deepEqual(setting('MemoryDenyWriteExecute'), [], "node's JIT needs writable code pages");
  });

  it('passes systemd-analyze verify (when systemd-analyze is installed)', (t) => {
    if (spawnSync('systemd-analyze', ['--version']).status !== 0) return t.skip('systemd-analyze not installed');
    const dir = mkdtempSync(join(tmpdir(), 'bastion-unit-'));
    try {
      // the unit as installed from this checkout
      const unit = join(dir, 'bastion.service');
      writeFileSync(unit, text.replaceAll('/opt/bastion', ROOT));
      const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr.trim(), '', r.stderr);
      const sec = spawnSync('systemd-analyze', ['security', '--offline=true', unit], { encoding: 'utf8' });
      const level = /Overall exposure level for bastion\.service: ([0-9.]+)/.exec(sec.stdout)?.[1];
      if (level) assert.ok(Number(level) <= 4, `exposure ${level}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('daemon capabilities', () => {
  it('CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON; CAP_SYS_PTRACE only with --docker', () => {
    const bits = (...n: number[]) => n.reduce((m, b) => m | (1n << BigInt(b)), 0n);
    assert.deepEqual(missingCapabilities(bits(12, 21), { docker: false }), []);
    assert.deepEqual(missingCapabilities(bits(12, 21), { docker: true }).map((c) => c.name), ['CAP_SYS_PTRACE']);
    assert.deepEqual(missingCapabilities(bits(12, 38, 39), { docker: false }).map((c) => c.name), ['CAP_SYS_ADMIN']);
    assert.equal(effectiveCapabilities('Name:\tx\nCapEff:\t0000000000201000\n'), bits(12, 21));
  });

  it('bastion run refuses to start without them, saying which and why, before touching anything', () => {
    const r = spawnSync('setpriv', ['--bounding-set=-all,+net_admin,+bpf', '--inh-caps=-all', '--ambient-caps=-all', process.execPath, join(ROOT, 'dist/src/cli/main.js'), 'run', '--config', '/nonexistent.yaml', '--pin-path', '/sys/fs/bpf/bastion-never'], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /missing capabilities, nothing done/);
    assert.match(r.stderr, /CAP_SYS_ADMIN, to enter containers' network namespaces/);
  });
});
