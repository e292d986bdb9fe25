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
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BastionDaemon, bastion, bastionStatus, uniquePinPath } from '../helpers/bastion-daemon.js';
import { lockFileFor, pidFileFor } from '../../src/api/paths.js';
import { processIdentity } from '../../src/daemon/instance.js';

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

/** A process that is not Bastion but whose command line says "bastion run" (what a reused pid can look like). */
function impostor(): { pid: number; alive(): boolean; kill(): void } {
  const child = spawn('bash', ['-c', 'exec -a "node /opt/bastion/dist/src/cli/main.js run --config /etc/bastion/bastion.yaml" sleep 300'], { stdio: 'ignore', detached: true });
  child.unref();
  const pid = child.pid!;
  return {
    pid,
    alive: () => {
      try {
        process.kill(pid, 0);
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('bastion');
      } catch {
        return false;
      }
    },
    kill: () => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    },
  };
}

describe('the daemon process: one per pin path, stopped only for sure', () => {
  let dir: string;
  let config: string;
  const pins: string[] = [];
  const daemons: BastionDaemon[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-trust-'));
    config = join(dir, 'bastion.yaml');
    writeFileSync(config, 'containers: []\npolicies: []\n');
  });

  after(async () => {
    for (const d of daemons) await d.stop().catch(() => undefined);
    for (const p of pins) {
      await bastion(['down', '--pin-path', p]).catch(() => undefined);
      rmSync(p, { recursive: true, force: true });
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("down never signals a stale pid file's process, even one whose command line says \"bastion run\" (failed before: it was killed)", async () => {
    const pin = uniquePinPath();
    pins.push(pin);
    const victim = impostor();
    try {
      await new Promise((r) => setTimeout(r, 200)); // exec'd
      assert.ok(victim.alive(), 'the impostor runs');
      // the old form: a bare pid
      mkdirSync('/run/bastion', { recursive: true, mode: 0o700 });
      writeFileSync(pidFileFor(pin), `${victim.pid}\n`);
      let r = await bastion(['down', '--pin-path', pin]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(victim.alive(), `down signalled pid ${victim.pid} of a bare pid file`);
      // the new form, with the pid but another process's start time (a reused pid)
      const id = processIdentity(victim.pid)!;
      writeFileSync(pidFileFor(pin), JSON.stringify({ ...id, startTime: String(Number(id.startTime) - 1), startedAt: new Date().toISOString(), pinPath: pin }));
      r = await bastion(['down', '--pin-path', pin]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /another process now: not signalled/);
      assert.ok(victim.alive(), `down signalled pid ${victim.pid}, whose start time is not the recorded one`);
    } finally {
      victim.kill();
    }
  });

  it('down stops a running daemon through its socket, and removes its files', async () => {
    const pin = uniquePinPath();
    pins.push(pin);
    const d = new BastionDaemon(config, pin).start();
    daemons.push(d);
    await d.waitReady();
    const rec = JSON.parse(readFileSync(pidFileFor(pin), 'utf8'));
    assert.equal(rec.pid, d.pid);
    assert.equal(rec.startTime, processIdentity(d.pid!)!.startTime, 'the pid file records the start time');
    const r = await bastion(['down', '--pin-path', pin, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).daemonStopped, d.pid);
    const exit = await Promise.race([d.exited, new Promise((res) => setTimeout(() => res('still running'), 5000))]);
    assert.notEqual(exit, 'still running');
    assert.ok(!existsSync(pidFileFor(pin)) && !existsSync(lockFileFor(pin)));
  });

  it('a second daemon on the same pin path fails at once, naming the first; the first keeps its socket and pid file (failed before: it took them over)', async () => {
    const pin = uniquePinPath();
    pins.push(pin);
    const first = new BastionDaemon(config, pin).start();
    daemons.push(first);
    await first.waitReady();
    const second = await bastion(['run', '--config', config, '--pin-path', pin], 20_000);
    assert.equal(second.code, 1, `second daemon: exit ${second.code}\n${second.stdout}\n${second.stderr}`);
    assert.match(second.stderr, new RegExp(`another bastion daemon already runs with pin path ${pin} \\(pid ${first.pid}`));
    assert.ok(first.running, 'the first daemon still runs');
    const s = await bastionStatus(pin);
    assert.equal(s.json?.daemon?.pid, first.pid, 'the socket is still the first daemon\'s');
    assert.equal(JSON.parse(readFileSync(pidFileFor(pin), 'utf8')).pid, first.pid);
    await first.stop();
    // the lock goes with the daemon: a new one starts
    const third = new BastionDaemon(config, pin).start();
    daemons.push(third);
    await third.waitReady();
    await third.stop();
  });
});

describe('a config path that leads to a secret file', () => {
  let dir: string;
  const pin = uniquePinPath();
  let daemon: BastionDaemon | undefined;
  const SECRET = 'HASHHASHqwertyuiopasdfghjklzxcvbnm0123456789';

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-trust-'));
  });

  after(async () => {
    await daemon?.stop().catch(() => undefined);
    await bastion(['down', '--pin-path', pin]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('puts no line of it into the log, stderr or the reload answer (failed before: every line, hashes included)', { timeout: 60_000 }, async () => {
    const config = join(dir, 'bastion.yaml');
    writeFileSync(config, 'containers: []\npolicies: []\n');
    daemon = new BastionDaemon(config, pin).start();
    await daemon.waitReady();
    // a root-owned 0600 file shaped like /etc/shadow, and the config path made a symlink to it
    const shadow = join(dir, 'shadow');
    writeFileSync(shadow, Array.from({ length: 20 }, (_, i) => `user${i}:$6$salt${i}$${SECRET}:19000:0:99999:7:::`).join('\n') + '\n', { mode: 0o600 });
    rmSync(config);
    execFileSync('ln', ['-s', shadow, config]);
    const answer = await bastion(['status', '--pin-path', pin]); // the daemon still answers
    assert.equal(answer.code, 0);
    const { apiCall } = await import('../../src/api/client.js');
    const { socketPathFor } = await import('../../src/api/paths.js');
    const r = await apiCall<unknown>(socketPathFor(pin), 'POST', '/v1/reload');
    assert.equal(r.status, 422);
    const everything = JSON.stringify(r.body) + daemon.lines.join('\n') + daemon.stderr;
    assert.ok(!everything.includes(SECRET), 'the secret reached the log, stderr or the answer');
    assert.ok(!everything.includes('user0:'), 'a line of the file reached the log, stderr or the answer');
    assert.match(JSON.stringify(r.body), /not a Bastion config file/);
  });
});
