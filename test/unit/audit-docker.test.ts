/**
 * The Docker checks over recorded data: a real `docker inspect` of a clean
 * container (test/fixtures/audit/inspect-clean.json: busybox with
 * --cap-drop NET_RAW --security-opt no-new-privileges) and variants of it
 * with one risky setting each. Every variant must raise its finding, and the
 * clean container (the fix applied) none. The settings that cannot start on
 * the test machine (--privileged, --cap-add ALL: runc "unable to apply caps";
 * --cap-add BPF: Docker 20.10 does not know it; AppArmor: the kernel has
 * none) are covered here only; the others also on the real engine
 * (test/integration/audit-docker.test.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { auditContainer, auditEngine, auditSocket, type AuditInspect, type ContainerContext, type EngineFacts } from '../../src/audit/docker-rules.js';
import { RULES, capRuleId, DANGEROUS_CAPABILITIES } from '../../src/audit/rules.js';
import { compareVersions, parseVersion, runcEscapes, vulnerableTo, RUNC_ESCAPES, cvesInChangelog, changelogVersion } from '../../src/audit/runc.js';
import { parseDockerdArgs } from '../../src/audit/docker-collect.js';

const clean = JSON.parse(readFileSync('test/fixtures/audit/inspect-clean.json', 'utf8')) as AuditInspect;
const variant = (f: (c: AuditInspect) => void): AuditInspect => {
  const c = structuredClone(clean);
  f(c);
  return c;
};

const CLEAN_ENGINE: EngineFacts = {
  version: '27.3.1',
  runc: { version: '1.3.3', fixedByPackage: [] },
  securityOptions: ['name=seccomp,profile=builtin', 'name=userns'],
  liveRestore: true,
  defaultBridgeIcc: false,
  flags: { userlandProxy: false, iptables: true, noNewPrivileges: false, source: 'test' },
  socket: { path: '/var/run/docker.sock', mode: 0o660, uid: 0, gid: 999, user: 'root', group: 'docker' },
};
const ctx: ContainerContext = { engine: CLEAN_ENGINE };
const ids = (fs: Array<{ id: string }>) => fs.map((f) => f.id).sort();

describe('audit: Docker containers (recorded inspect data)', () => {
  it('the clean container has no finding', () => {
    assert.deepEqual(auditContainer({ inspect: clean }, ctx), []);
  });

  const cases: Array<[string, (c: AuditInspect) => void, string]> = [
    ['--privileged', (c) => (c.HostConfig.Privileged = true), 'docker.container.privileged'],
    ['--network host', (c) => (c.HostConfig.NetworkMode = 'host'), 'docker.container.host-network'],
    ['--network container:X', (c) => (c.HostConfig.NetworkMode = 'container:0123456789ab'), 'docker.container.shared-netns'],
    ['--pid host', (c) => (c.HostConfig.PidMode = 'host'), 'docker.container.host-pid'],
    ['--ipc host', (c) => (c.HostConfig.IpcMode = 'host'), 'docker.container.host-ipc'],
    ['--uts host', (c) => (c.HostConfig.UTSMode = 'host'), 'docker.container.host-uts'],
    ...DANGEROUS_CAPABILITIES.map((d): [string, (c: AuditInspect) => void, string] => [
      `--cap-add ${d.cap}`,
      (c) => (c.HostConfig.CapAdd = [d.cap === 'ALL' ? 'ALL' : `CAP_${d.cap}`]),
      capRuleId(d.cap),
    ]),
    ['NET_RAW kept (no --cap-drop)', (c) => (c.HostConfig.CapDrop = null), 'docker.container.net-raw'],
    ['--cap-add NET_RAW', (c) => (c.HostConfig.CapAdd = ['NET_RAW']), 'docker.container.net-raw'],
    ['-v /var/run/docker.sock', (c) => (c.Mounts = [{ Type: 'bind', Source: '/var/run/docker.sock', Destination: '/var/run/docker.sock', RW: true }]), 'docker.container.docker-socket'],
    ['-v /run:/hostrun', (c) => (c.Mounts = [{ Type: 'bind', Source: '/run', Destination: '/hostrun', RW: false }]), 'docker.container.docker-socket'],
    ['-v /:/host:ro', (c) => (c.Mounts = [{ Type: 'bind', Source: '/', Destination: '/host', RW: false }]), 'docker.container.host-root'],
    ['-v /etc:/e', (c) => (c.Mounts = [{ Type: 'bind', Source: '/etc', Destination: '/e', RW: true }]), 'docker.container.sensitive-mount'],
    ['-v /sys/fs/bpf:/bpf', (c) => (c.Mounts = [{ Type: 'bind', Source: '/sys/fs/bpf', Destination: '/bpf', RW: true }]), 'docker.container.sensitive-mount'],
    ['no no-new-privileges', (c) => (c.HostConfig.SecurityOpt = []), 'docker.container.no-new-privileges'],
    ['no-new-privileges=false', (c) => (c.HostConfig.SecurityOpt = ['no-new-privileges=false']), 'docker.container.no-new-privileges'],
    ['seccomp=unconfined', (c) => c.HostConfig.SecurityOpt!.push('seccomp=unconfined'), 'docker.container.seccomp-unconfined'],
    ['-p 8080:80', (c) => (c.NetworkSettings.Ports = { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }, { HostIp: '::', HostPort: '8080' }] }), 'docker.container.ports-all-addresses'],
  ];
  for (const [what, change, id] of cases) {
    it(`${what} → ${id}, and the fix (the clean container) has none`, () => {
      assert.ok(RULES.has(id), `rule ${id} exists`);
      const found = auditContainer({ inspect: variant(change) }, ctx);
      assert.ok(found.some((f) => f.id === id), `${id} among ${ids(found).join(', ')}`);
      const f = found.find((x) => x.id === id)!;
      assert.equal(f.object.name, 'clean');
      assert.equal(f.object.id, clean.Id.slice(0, 12));
      assert.ok(f.evidence.length > 0 && f.fix.length > 0 && f.gain.length > 0);
      assert.ok(!auditContainer({ inspect: clean }, ctx).some((x) => x.id === id));
    });
  }

  it('a privileged container is reported as privileged, not once more for each of its settings', () => {
    const found = auditContainer({ inspect: variant((c) => ((c.HostConfig.Privileged = true), (c.HostConfig.SecurityOpt = []))) }, ctx);
    assert.deepEqual(ids(found), ['docker.container.privileged']);
  });

  it('a read-only sensitive mount is medium, a writable one high', () => {
    const mount = (RW: boolean) => auditContainer({ inspect: variant((c) => (c.Mounts = [{ Type: 'bind', Source: '/usr/lib', Destination: '/l', RW }])) }, ctx)[0]!;
    assert.equal(mount(true).severity, 'high');
    assert.equal(mount(false).severity, 'medium');
  });

  it('a volume (not a bind mount) of the same path is not a host mount', () => {
    assert.deepEqual(auditContainer({ inspect: variant((c) => (c.Mounts = [{ Type: 'volume', Source: '/var/lib/docker/volumes/x/_data', Destination: '/x', RW: true }])) }, ctx), []);
  });

  it('a port published on one address is fine', () => {
    assert.deepEqual(auditContainer({ inspect: variant((c) => (c.NetworkSettings.Ports = { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }] })) }, ctx), []);
  });

  it('NET_RAW: the bounding set of the process decides when it is known', () => {
    const withBit = 0xa80425fbn; // Docker's default set (bit 13 set)
    const without = 0xa80405fbn; // --cap-drop NET_RAW
    const kept = variant((c) => (c.HostConfig.CapDrop = null));
    assert.deepEqual(ids(auditContainer({ inspect: kept, boundingCaps: without }, ctx)), []);
    const f = auditContainer({ inspect: clean, boundingCaps: withBit }, ctx);
    assert.deepEqual(ids(f), ['docker.container.net-raw']);
    assert.match(f[0]!.evidence[0]!.value, /00000000a80425fb/);
  });

  it('NET_RAW is lowered to low when Bastion enforces on the container', () => {
    const kept = variant((c) => (c.HostConfig.CapDrop = null));
    assert.equal(auditContainer({ inspect: kept }, ctx)[0]!.severity, 'medium');
    const f = auditContainer({ inspect: kept }, { ...ctx, enforced: new Set([clean.Id.slice(0, 12)]) })[0]!;
    assert.equal(f.severity, 'low');
    assert.ok(f.evidence.some((e) => e.field === 'bastion'));
  });

  it('--cap-drop ALL drops NET_RAW, --cap-add ALL with --cap-drop NET_RAW too', () => {
    assert.deepEqual(ids(auditContainer({ inspect: variant((c) => (c.HostConfig.CapDrop = ['ALL'])) }, ctx)), []);
    assert.deepEqual(ids(auditContainer({ inspect: variant((c) => ((c.HostConfig.CapAdd = ['ALL']), (c.HostConfig.CapDrop = ['NET_RAW']))) }, ctx)), ['docker.container.cap-all']);
  });

  it('no-new-privileges set by dockerd for every container counts', () => {
    const c = variant((x) => (x.HostConfig.SecurityOpt = []));
    assert.deepEqual(auditContainer({ inspect: c }, { engine: { ...CLEAN_ENGINE, flags: { ...CLEAN_ENGINE.flags!, noNewPrivileges: true } } }), []);
  });

  it('an engine without seccomp leaves every container unconfined', () => {
    const f = auditContainer({ inspect: clean }, { engine: { ...CLEAN_ENGINE, securityOptions: ['name=userns'] } });
    assert.deepEqual(ids(f), ['docker.container.seccomp-unconfined']);
  });

  it('AppArmor: unconfined on a host that has it is reported, the docker-default profile is not, a host without AppArmor is not checked', () => {
    const apparmor = { engine: { ...CLEAN_ENGINE, securityOptions: [...CLEAN_ENGINE.securityOptions, 'name=apparmor'] } };
    const unconfined = variant((c) => (c.AppArmorProfile = 'unconfined'));
    assert.deepEqual(ids(auditContainer({ inspect: unconfined }, apparmor)), ['docker.container.apparmor-unconfined']);
    assert.deepEqual(auditContainer({ inspect: variant((c) => (c.AppArmorProfile = 'docker-default')) }, apparmor), []);
    assert.deepEqual(auditContainer({ inspect: unconfined }, ctx), []);
  });
});

describe('audit: Docker engine', () => {
  it('a clean engine has no finding', () => {
    assert.deepEqual(auditEngine(CLEAN_ENGINE), []);
  });

  const cases: Array<[string, Partial<EngineFacts>, string]> = [
    ['icc on docker0', { defaultBridgeIcc: true }, 'docker.engine.icc'],
    ['userland proxy', { flags: { ...CLEAN_ENGINE.flags!, userlandProxy: true } }, 'docker.engine.userland-proxy'],
    ['--iptables=false', { flags: { ...CLEAN_ENGINE.flags!, iptables: false } }, 'docker.engine.iptables'],
    ['no live restore', { liveRestore: false }, 'docker.engine.live-restore'],
    ['no userns-remap', { securityOptions: ['name=seccomp,profile=builtin'] }, 'docker.engine.userns-remap'],
    ['runc 1.1.11', { runc: { version: '1.1.11', fixedByPackage: [] } }, 'docker.engine.runc-escape'],
    ['Docker 18.09.1 without a runc component', { version: '18.09.1', runc: undefined }, 'docker.engine.runc-escape'],
    ['socket 666', { socket: { ...CLEAN_ENGINE.socket!, mode: 0o666 } }, 'docker.engine.socket-permissions'],
  ];
  for (const [what, change, id] of cases) {
    it(`${what} → ${id}`, () => {
      const e = { ...CLEAN_ENGINE, ...change } as EngineFacts;
      if ('runc' in change && change.runc === undefined) delete e.runc;
      assert.ok(ids(auditEngine(e)).includes(id), ids(auditEngine(e)).join(', '));
    });
  }

  it('Docker 18.09.2 is past CVE-2019-5736', () => {
    const e = { ...CLEAN_ENGINE, version: '18.09.2' };
    delete e.runc;
    assert.deepEqual(auditEngine(e), []);
  });

  it('socket permissions: 666 critical; wrong group or 670 high; 660 root:docker and 600 root:root fine', () => {
    const s = CLEAN_ENGINE.socket!;
    assert.equal(auditSocket({ ...s, mode: 0o666 })[0]!.severity, 'critical');
    assert.equal(auditSocket({ ...s, gid: 100, group: 'users' })[0]!.severity, 'high');
    assert.equal(auditSocket({ ...s, mode: 0o670 })[0]!.severity, 'high');
    assert.equal(auditSocket({ ...s, uid: 1000, user: 'alice' })[0]!.severity, 'high');
    assert.deepEqual(auditSocket(s), []);
    assert.deepEqual(auditSocket({ ...s, mode: 0o600, gid: 0, group: 'root' }), []);
  });
});

describe('audit: runc versions', () => {
  const escapes = (v: string, backported: string[] = []) => runcEscapes(v, backported)!.map((c) => c.id);
  const ALL_2025 = ['CVE-2025-31133', 'CVE-2025-52565', 'CVE-2025-52881'];
  it('known versions', () => {
    assert.deepEqual(escapes('1.0-rc6'), ['CVE-2019-5736', 'CVE-2021-30465', 'CVE-2024-21626', ...ALL_2025]);
    assert.deepEqual(escapes('1.0.0-rc6'), ['CVE-2019-5736', 'CVE-2021-30465', 'CVE-2024-21626', ...ALL_2025]);
    assert.deepEqual(escapes('1.0.0-rc7'), ['CVE-2021-30465', 'CVE-2024-21626', ...ALL_2025]);
    assert.deepEqual(escapes('1.0.0-rc93'), ['CVE-2021-30465', 'CVE-2024-21626', ...ALL_2025]);
    assert.deepEqual(escapes('1.0.0-rc95'), ['CVE-2024-21626', ...ALL_2025]);
    assert.deepEqual(escapes('1.1.11'), ['CVE-2024-21626', ...ALL_2025]);
    assert.deepEqual(escapes('1.1.12'), ALL_2025);
    assert.deepEqual(escapes('1.2.7'), ALL_2025);
    assert.deepEqual(escapes('1.2.8'), []);
    assert.deepEqual(escapes('1.3.2'), ALL_2025);
    assert.deepEqual(escapes('v1.3.3'), []);
    assert.deepEqual(escapes('1.4.0-rc.2'), ALL_2025);
    assert.deepEqual(escapes('1.4.0-rc.3'), []);
    assert.deepEqual(escapes('1.4.0'), []);
    assert.deepEqual(escapes('1.5.1'), []);
  });
  it("a distribution build's changelog counts as fixed (this machine's Debian runc backports CVE-2024-21626)", () => {
    const log = 'runc (1.1.5+ds1-1+deb12u1) bookworm-security; urgency=high\n\n  * CVE-2024-21626: several container breakouts due to internally leaked fds\n\nrunc (1.1.5+ds1-1) unstable; urgency=medium\n  + CVE-2023-27561: x\n';
    assert.equal(changelogVersion(log), '1.1.5+ds1-1+deb12u1');
    assert.deepEqual(cvesInChangelog(log), ['CVE-2023-27561', 'CVE-2024-21626']);
    assert.deepEqual(escapes('1.1.5+ds1', cvesInChangelog(log)), ALL_2025);
  });
  it('not a version: undefined', () => {
    assert.equal(runcEscapes('unknown'), undefined);
  });

  const version = fc
    .tuple(fc.nat(3), fc.nat(5), fc.nat(15), fc.option(fc.nat(120), { nil: undefined }))
    .map(([a, b, c, rc]) => `${a}.${b}.${c}${rc === undefined ? '' : `-rc${rc}`}`);
  it('compareVersions is a total order (antisymmetric, transitive); a release sorts after its candidates', () => {
    fc.assert(
      fc.property(version, version, version, (a, b, c) => {
        const [x, y, z] = [a, b, c].map((v) => parseVersion(v)!);
        // === takes 0 and -0 as equal; assert.equal (Object.is) does not, and failed whenever two versions were equal
        assert.ok(Math.sign(compareVersions(x!, y!)) === -Math.sign(compareVersions(y!, x!)), `${a} vs ${b}`);
        if (compareVersions(x!, y!) <= 0 && compareVersions(y!, z!) <= 0) assert.ok(compareVersions(x!, z!) <= 0);
      }),
    );
    assert.ok(compareVersions(parseVersion('1.0.0-rc95')!, parseVersion('1.0.0-rc7')!) > 0);
    assert.ok(compareVersions(parseVersion('1.0.0')!, parseVersion('1.0.0-rc95')!) > 0);
  });
  it('vulnerability is monotonic: an older version of a vulnerable one is vulnerable', () => {
    fc.assert(
      fc.property(version, version, fc.constantFrom(...RUNC_ESCAPES), (a, b, cve) => {
        const [x, y] = [parseVersion(a)!, parseVersion(b)!];
        const [older, newer] = compareVersions(x, y) <= 0 ? [x, y] : [y, x];
        if (vulnerableTo(newer, cve) && older.nums[0] === newer.nums[0] && older.nums[1] === newer.nums[1]) assert.ok(vulnerableTo(older, cve));
      }),
    );
  });
});

describe('audit: dockerd command line', () => {
  it('reads Go-style flags', () => {
    assert.deepEqual(parseDockerdArgs(['--iptables=true', '--live-restore']), { iptables: true });
    assert.deepEqual(parseDockerdArgs(['--userland-proxy=false', '--iptables=false', '--no-new-privileges', '--config-file', '/x.json']), {
      userlandProxy: false,
      iptables: false,
      noNewPrivileges: true,
      configFile: '/x.json',
    });
  });
});
