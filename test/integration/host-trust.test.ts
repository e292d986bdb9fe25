/**
 * What the daemon trusts on the host (issue 13): the pin directory, the pid
 * file, the lock that makes one daemon per pin path.
 *
 * /sys/fs/bpf is world-writable here (mode 1777), so an unprivileged user
 * (uid 65534, through setpriv) can create a pin directory first, or a
 * symbolic link in its place. Bastion must refuse both, never follow a link
 * out of the pin root on `down`, and create its own directory 0700.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BastionDaemon, bastion, bastionStatus, uniquePinPath } from '../helpers/bastion-daemon.js';

/** Runs a command as nobody (uid/gid 65534, no supplementary groups). */
function asNobody(cmd: string, args: string[]): void {
  execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', cmd, ...args], { stdio: 'pipe' });
}

describe('pin directory ownership', () => {
  let dir: string;
  let config: string;
  const made: string[] = [];
  const pin = () => {
    const p = uniquePinPath();
    made.push(p);
    return p;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-trust-'));
    config = join(dir, 'bastion.yaml');
    writeFileSync(config, 'containers: []\npolicies: []\n');
  });

  after(async () => {
    for (const p of made) {
      await bastion(['down', '--pin-path', p]).catch(() => undefined);
      rmSync(p, { recursive: true, force: true });
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a pin directory another user created first, and pins nothing in it', async () => {
    const p = pin();
    asNobody('mkdir', [p]);
    const r = await bastion(['run', '--config', config, '--pin-path', p], 30_000);
    assert.notEqual(r.code, 0, `the daemon started on a directory of uid 65534:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /owned by uid 65534, not by root/);
    assert.deepEqual(readdirSync(p), [], 'nothing was pinned there');
  });

  it('refuses a symlink in place of the pin directory; down and status do not follow it', async () => {
    const target = pin();
    mkdirSync(target, { mode: 0o700 });
    mkdirSync(join(target, 'canary'));
    const link = pin();
    asNobody('ln', ['-s', target, link]);

    const run = await bastion(['run', '--config', config, '--pin-path', link], 30_000);
    assert.notEqual(run.code, 0, `the daemon started through a symlink:\n${run.stdout}\n${run.stderr}`);
    assert.match(run.stderr, /is a symbolic link/);

    const down = await bastion(['down', '--pin-path', link]);
    assert.equal(down.code, 1, `down through a symlink: exit ${down.code}\n${down.stdout}\n${down.stderr}`);
    assert.match(down.stderr, /is a symbolic link/);
    assert.ok(existsSync(join(target, 'canary')), 'down removed what the link pointed to');

    const status = await bastionStatus(link);
    assert.equal(status.code, 4);
    assert.match(status.json?.enforcement?.refused ?? '', /symbolic link/);
  });

  it('refuses a pin path below a symlinked directory', async () => {
    const link = pin();
    asNobody('ln', ['-s', '/sys/fs/bpf', link]);
    const leaf = uniquePinPath().split('/').pop()!;
    made.push(join('/sys/fs/bpf', leaf)); // where a daemon that followed the link would pin
    const r = await bastion(['run', '--config', config, '--pin-path', join(link, leaf)], 30_000);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /is a symbolic link/);
    assert.ok(!existsSync(join('/sys/fs/bpf', leaf)), 'nothing was created through the link');
  });

  it('creates its own pin directory 0700, owned by root, and takes back a looser mode', async () => {
    const p = pin();
    const d = new BastionDaemon(config, p).start();
    try {
      await d.waitReady();
      const st = lstatSync(p);
      assert.equal(st.uid, 0);
      assert.equal((st.mode & 0o7777).toString(8), '700');
    } finally {
      await d.stop();
    }
    // a root-owned directory with a looser (but not writable) mode is ours: tightened
    execFileSync('chmod', ['0755', p]);
    const d2 = new BastionDaemon(config, p).start();
    try {
      await d2.waitReady();
      assert.equal((lstatSync(p).mode & 0o7777).toString(8), '700');
    } finally {
      await d2.stop();
    }
  });
});
