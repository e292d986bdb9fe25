import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import {
  ComposeError,
  composeConfigDocument,
  composeTextToPolicies,
  composeToPolicies,
  composeToPolicySet,
  interpolate,
  mergePorts,
  normalizeProjectName,
  parseCompose,
  parseShortPort,
  renderComposeYaml,
} from '../../src/policy/compose.js';
import { registerCompose } from '../../src/cli/commands/compose.js';
import { configToPolicySet, parseConfigText } from '../../src/policy/bastion-config.js';
import { formatIssue } from '../../src/policy/errors.js';
import { CliError, EXIT } from '../../src/cli/errors.js';
import { InputFileError } from '../../src/policy/input-file.js';

// compiled to dist/test/unit: the fixtures stay in the source tree
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const FIX = join(ROOT, 'test/fixtures/compose');
const shopText = readFileSync(join(FIX, 'shop.compose.yaml'), 'utf8');

const sel = (svc: string, project = 'shop') => ({ 'bastion.io/compose-service': svc, 'com.docker.compose.project': project });

describe('compose: sample app (depends_on, links, expose, every ports syntax)', () => {
  const app = parseCompose(shopText, { file: 'shop.compose.yaml' });

  test('services, dependencies and container ports are read from every syntax', () => {
    const by = Object.fromEntries(app.services.map((s) => [s.name, s]));
    assert.equal(app.name, 'Shop');
    assert.deepEqual(Object.keys(by), ['web', 'api', 'auth', 'db', 'cache', 'queue', 'worker']);
    assert.deepEqual(by.web!.dependsOn, ['api', 'cache']);
    assert.deepEqual(by.web!.links, ['auth']);
    assert.deepEqual(by.web!.ports, [
      { protocol: 'tcp', from: 80, to: 80 },
      { protocol: 'tcp', from: 443, to: 443 },
    ]);
    assert.deepEqual(by.api!.dependsOn, ['db', 'queue']);
    assert.deepEqual(by.api!.links, ['db']);
    // expose "9000", 9001, "9100-9102" + long syntax target 9000/tcp, 5353/udp
    assert.deepEqual(by.api!.ports, [
      { protocol: 'tcp', from: 9000, to: 9001 },
      { protocol: 'tcp', from: 9100, to: 9102 },
      { protocol: 'udp', from: 5353, to: 5353 },
    ]);
    assert.deepEqual(by.auth!.ports, [
      { protocol: 'tcp', from: 7000, to: 7000 },
      { protocol: 'tcp', from: 7443, to: 7443 },
    ]);
    assert.deepEqual(by.cache!.ports, [
      { protocol: 'tcp', from: 6379, to: 6380 },
      { protocol: 'udp', from: 11211, to: 11211 },
    ]);
    assert.deepEqual(by.queue!.ports, []);
    assert.deepEqual(by.worker!.dependsOn, ['queue', 'db']);
  });

  test('policies: one per edge (depends_on and links merged), sorted, with the target ports', () => {
    const p = composeToPolicies(app);
    assert.equal(p.project, 'shop');
    assert.deepEqual(composeConfigDocument(p), {
      mode: 'enforce',
      policies: [
        { name: 'api-to-db', from: sel('api'), to: sel('db'), ports: ['5432/tcp'] },
        { name: 'api-to-queue', from: sel('api'), to: sel('queue') },
        { name: 'auth-to-db', from: sel('auth'), to: sel('db'), ports: ['5432/tcp'] },
        { name: 'web-to-api', from: sel('web'), to: sel('api'), ports: ['9000-9001/tcp', '9100-9102/tcp', '5353/udp'] },
        { name: 'web-to-auth', from: sel('web'), to: sel('auth'), ports: ['7000/tcp', '7443/tcp'] },
        { name: 'web-to-cache', from: sel('web'), to: sel('cache'), ports: ['6379-6380/tcp', '11211/udp'] },
        { name: 'worker-to-db', from: sel('worker'), to: sel('db'), ports: ['5432/tcp'] },
        { name: 'worker-to-queue', from: sel('worker'), to: sel('queue') },
        // published ports: from the host always, from outside unless bound to loopback
        { name: 'api-published-from-host', from: 'host', to: sel('api'), ports: ['9000/tcp', '5353/udp'] },
        { name: 'api-published-from-outside', from: { cidr: '0.0.0.0/0' }, to: sel('api'), ports: ['9000/tcp', '5353/udp'] },
        { name: 'auth-published-from-host', from: 'host', to: sel('auth'), ports: ['7000/tcp', '7443/tcp'] },
        { name: 'auth-published-from-outside', from: { cidr: '0.0.0.0/0' }, to: sel('auth'), ports: ['7000/tcp'] },
        { name: 'cache-published-from-host', from: 'host', to: sel('cache'), ports: ['6379-6380/tcp', '11211/udp'] },
        { name: 'cache-published-from-outside', from: { cidr: '0.0.0.0/0' }, to: sel('cache'), ports: ['6379-6380/tcp'] },
        { name: 'web-published-from-host', from: 'host', to: sel('web'), ports: ['80/tcp', '443/tcp'] },
        { name: 'web-published-from-outside', from: { cidr: '0.0.0.0/0' }, to: sel('web'), ports: ['80/tcp'] },
      ],
    });
    assert.deepEqual(p.edges.find((e) => e.from === 'api' && e.to === 'db')!.via, ['depends_on', 'links']);
    assert.deepEqual(p.warnings, [
      'service queue declares no ports (expose or ports): the dependency api → queue (depends_on) allows every port and protocol; declare "expose:" on queue to narrow it',
      'service queue declares no ports (expose or ports): the dependency worker → queue (depends_on) allows every port and protocol; declare "expose:" on queue to narrow it',
    ]);
  });

  test('YAML output is exactly the expected document, comments included', () => {
    const out = renderComposeYaml(composeToPolicies(app), 'shop.compose.yaml');
    assert.equal(out, readFileSync(join(FIX, 'shop.expected.yaml'), 'utf8'));
    // and it reads back as the same data
    assert.deepEqual(parseYaml(out), composeConfigDocument(composeToPolicies(app)));
    assert.match(out, /# api → queue \(depends_on\): queue declares no ports \(expose or ports\), so EVERY port and protocol is allowed/);
  });

  test('the output is a valid Bastion config and means the same as the internal model', () => {
    const p = composeToPolicies(app);
    const parsed = parseConfigText(renderComposeYaml(p, 'shop.compose.yaml'), 'generated.yaml', { containersRequired: false });
    assert.ok(parsed.ok, parsed.ok ? '' : parsed.errors.map(formatIssue).join('\n'));
    assert.deepEqual(configToPolicySet(parsed.config), composeToPolicySet(p));
  });

  test('--published-ports host-only: no policy from outside; deny: none at all', () => {
    const host = composeToPolicies(app, { publishedPorts: 'host-only' }).policies.filter((x) => x.name.includes('published'));
    assert.deepEqual(host.map((x) => x.name), ['api-published-from-host', 'auth-published-from-host', 'cache-published-from-host', 'web-published-from-host']);
    assert.ok(!composeToPolicies(app, { publishedPorts: 'deny' }).policies.some((x) => x.name.includes('published')));
  });

  test('--unported none: an edge to a port-less service allows nothing, and says so', () => {
    const p = composeToPolicies(app, { unported: 'none', publishedPorts: 'deny' });
    assert.deepEqual(
      p.policies.map((x) => x.name),
      ['api-to-db', 'auth-to-db', 'web-to-api', 'web-to-auth', 'web-to-cache', 'worker-to-db'],
    );
    assert.match(p.warnings[0]!, /api → queue \(depends_on\) allows nothing/);
  });

  test('project scoping: explicit, none, or from name:', () => {
    assert.deepEqual(composeToPolicies(app, { project: null }).policies[0]!.from, { 'bastion.io/compose-service': 'api' });
    assert.deepEqual(composeToPolicies(app, { project: 'other' }).policies[0]!.to, sel('db', 'other'));
    const unnamed = parseCompose('services:\n  a: {depends_on: [b]}\n  b: {expose: [80]}\n');
    assert.deepEqual(composeToPolicies(unnamed).policies[0]!.from, { 'bastion.io/compose-service': 'a' });
    assert.equal(normalizeProjectName('My Shop.v2'), 'myshopv2');
    assert.equal(normalizeProjectName('_x-Y'), 'x-y');
  });

  test('internal model: an egress rule on the client and an ingress rule on the server per policy', () => {
    const set = composeToPolicySet(composeToPolicies(app));
    assert.equal(set.mode, 'enforce');
    // 8 edges (egress and ingress each), 8 published-port policies (ingress only)
    assert.equal(set.rules.length, 24);
    assert.deepEqual(set.rules.slice(0, 4), [
      {
        id: 'api-to-db',
        subject: { matchLabels: sel('api') },
        direction: 'egress',
        peers: [{ kind: 'endpoints', selector: { matchLabels: sel('db') } }],
        ports: [{ protocol: 'tcp', from: 5432, to: 5432 }],
      },
      {
        id: 'api-to-db',
        subject: { matchLabels: sel('db') },
        direction: 'ingress',
        peers: [{ kind: 'endpoints', selector: { matchLabels: sel('api') } }],
        ports: [{ protocol: 'tcp', from: 5432, to: 5432 }],
      },
      // no port declared: every protocol and port
      { id: 'api-to-queue', subject: { matchLabels: sel('api') }, direction: 'egress', peers: [{ kind: 'endpoints', selector: { matchLabels: sel('queue') } }], ports: [] },
      { id: 'api-to-queue', subject: { matchLabels: sel('queue') }, direction: 'ingress', peers: [{ kind: 'endpoints', selector: { matchLabels: sel('api') } }], ports: [] },
    ]);
    const webApi = set.rules.find((r) => r.id === 'web-to-api' && r.direction === 'egress')!;
    assert.deepEqual(webApi.ports, [
      { protocol: 'tcp', from: 9000, to: 9001 },
      { protocol: 'tcp', from: 9100, to: 9102 },
      { protocol: 'udp', from: 5353, to: 5353 },
    ]);
  });
});

describe('compose: port syntaxes', () => {
  const cases: Array<[string, string | { protocol: string; from: number; to: number; hostIp?: string }]> = [
    ['80', { protocol: 'tcp', from: 80, to: 80 }],
    ['8080:80', { protocol: 'tcp', from: 80, to: 80 }],
    ['127.0.0.1:8080:80', { protocol: 'tcp', from: 80, to: 80, hostIp: '127.0.0.1' }],
    ['127.0.0.1:8080:80/udp', { protocol: 'udp', from: 80, to: 80, hostIp: '127.0.0.1' }],
    ['127.0.0.1::5000', { protocol: 'tcp', from: 5000, to: 5000, hostIp: '127.0.0.1' }],
    ['[::1]:6000:6001', { protocol: 'tcp', from: 6001, to: 6001, hostIp: '::1' }],
    ['[2001:db8::1]:53:53/udp', { protocol: 'udp', from: 53, to: 53, hostIp: '2001:db8::1' }],
    ['9000-9010', { protocol: 'tcp', from: 9000, to: 9010 }],
    ['9090-9091:8080-8081', { protocol: 'tcp', from: 8080, to: 8081 }],
    ['127.0.0.1:5000-5010:5000-5010/SCTP', { protocol: 'sctp', from: 5000, to: 5010, hostIp: '127.0.0.1' }],
    ['6060:6060/udp', { protocol: 'udp', from: 6060, to: 6060 }],
    ['80:abc', 'invalid container port "abc" (a port 1-65535 or a range such as 9000-9010)'],
    ['0', 'invalid container port "0" (a port 1-65535 or a range such as 9000-9010)'],
    ['65536', 'invalid container port "65536" (a port 1-65535 or a range such as 9000-9010)'],
    ['9010-9000', 'invalid container port "9010-9000" (a port 1-65535 or a range such as 9000-9010)'],
    ['80/icmp', 'unknown protocol "icmp" (use tcp, udp or sctp)'],
    ['x:80', 'invalid host port "x"'],
    ['1:2:3:4', 'too many ":" (use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]; IPv6 addresses in brackets)'],
  ];
  for (const [spec, want] of cases) {
    test(`"${spec}"`, () => assert.deepEqual(parseShortPort(spec), want));
  }

  test('numbers, long syntax and expose in one service', () => {
    const app = parseCompose(
      [
        'services:',
        '  s:',
        '    expose: [3000, "3001", "4000-4001/udp"]',
        '    ports:',
        '      - 8080',
        '      - {target: 9000, published: "19000-19001", protocol: udp}',
        '      - {target: "7000", host_ip: 127.0.0.1, mode: host, name: web, app_protocol: http}',
      ].join('\n'),
    );
    assert.deepEqual(app.services[0]!.ports, [
      { protocol: 'tcp', from: 3000, to: 3001 },
      { protocol: 'tcp', from: 7000, to: 7000 },
      { protocol: 'tcp', from: 8080, to: 8080 },
      { protocol: 'udp', from: 4000, to: 4001 },
      { protocol: 'udp', from: 9000, to: 9000 },
    ]);
  });

  test('ranges merge when they overlap or touch, per protocol', () => {
    assert.deepEqual(
      mergePorts([
        { protocol: 'udp', from: 5, to: 5 },
        { protocol: 'tcp', from: 10, to: 20 },
        { protocol: 'tcp', from: 21, to: 25 },
        { protocol: 'tcp', from: 15, to: 16 },
        { protocol: 'tcp', from: 30, to: 30 },
        { protocol: 'udp', from: 6, to: 6 },
      ]),
      [
        { protocol: 'tcp', from: 10, to: 25 },
        { protocol: 'tcp', from: 30, to: 30 },
        { protocol: 'udp', from: 5, to: 6 },
      ],
    );
  });
});

describe('compose: invalid input is rejected naming file, line and field', () => {
  test('the bad fixture: every error, in file order', () => {
    const text = readFileSync(join(FIX, 'bad.compose.yaml'), 'utf8');
    assert.throws(
      () => parseCompose(text, { file: 'bad.compose.yaml' }),
      (err: unknown) => {
        assert.ok(err instanceof ComposeError);
        assert.deepEqual(err.message.split('\n'), [
          'bad.compose.yaml:6:9: services.web.depends_on[1]: service "nosuch" is not defined in services',
          'bad.compose.yaml:8:9: services.web.ports[0]: invalid port "80:http": invalid container port "http" (a port 1-65535 or a range such as 9000-9010)',
          'bad.compose.yaml:9:17: services.web.ports[1].target: invalid container port number 70000',
          'bad.compose.yaml:13:9: services.api.expose[0]: unknown protocol "icmp" (use tcp, udp or sctp)',
          'bad.compose.yaml:15:9: services.api.links[0]: must be "SERVICE" or "SERVICE:ALIAS", not "web:alias:extra"',
        ]);
        return true;
      },
    );
  });

  const bad: Array<[string, string, RegExp]> = [
    ['YAML syntax', 'services:\n  a: [1, 2\n', /^c\.yaml:\d+:\d+: invalid YAML: /],
    ['not a mapping', '- a\n- b\n', /^c\.yaml:1:1: a Compose file is a mapping with a "services" key, not a list$/],
    ['no services', 'version: "3"\n', /^c\.yaml:1:1: no "services" key$/],
    ['services a list', 'services: [a]\n', /^c\.yaml:1:11: services: must be a mapping of services, not a list$/],
    ['service not a mapping', 'services:\n  a: 3\n', /^c\.yaml:2:6: services\.a: a service is a mapping, not number 3$/],
    ['self dependency', 'services:\n  a:\n    depends_on: [a]\n', /^c\.yaml:3:18: services\.a\.depends_on\[0\]: a service cannot depend on itself$/],
    [
      'depends_on map to an unknown service',
      'services:\n  a:\n    depends_on:\n      b: {condition: service_started}\n',
      /^c\.yaml:4:10: services\.a\.depends_on\.b: service "b" is not defined in services$/,
    ],
    [
      'unknown condition',
      'services:\n  a:\n    depends_on:\n      b: {condition: up}\n  b: {}\n',
      /^c\.yaml:4:22: services\.a\.depends_on\.b\.condition: unknown condition string "up"/,
    ],
    ['depends_on a string', 'services:\n  a:\n    depends_on: b\n  b: {}\n', /^c\.yaml:3:17: services\.a\.depends_on: must be a list of services or a mapping, not string "b"$/],
    ['long syntax without target', 'services:\n  a:\n    ports:\n      - {published: 80}\n', /^c\.yaml:4:9: services\.a\.ports\[0\]: long syntax needs "target"/],
    ['long syntax unknown field', 'services:\n  a:\n    ports:\n      - {target: 80, bogus: 1}\n', /^c\.yaml:4:29: services\.a\.ports\[0\]\.bogus: unknown field/],
    ['required variable', 'services:\n  a:\n    expose: ["${PORT:?set PORT}"]\n', /^c\.yaml:3:14: services\.a\.expose\[0\]: required variable PORT is not set: set PORT/],
    ['duplicate key', 'services:\n  a: {}\n  a: {}\n', /^c\.yaml:3:3: invalid YAML: Map keys must be unique/],
  ];
  for (const [what, text, re] of bad) {
    test(what, () => {
      assert.throws(
        () => parseCompose(text, { file: 'c.yaml' }),
        (err: unknown) => {
          assert.ok(err instanceof ComposeError, String(err));
          assert.match(err.message, re);
          assert.equal(err.issues[0]!.file, 'c.yaml');
          return true;
        },
      );
    });
  }
});

describe('compose: interpolation and warnings', () => {
  test('${VAR}, defaults, $$ and $VAR', () => {
    const problems: string[] = [];
    const env = { A: '1', E: '' };
    const f = (s: string) => interpolate(s, env, (m) => problems.push(m));
    assert.equal(f('${A}'), '1');
    assert.equal(f('$A-$A'), '1-1');
    assert.equal(f('${B:-8080}'), '8080');
    assert.equal(f('${E:-x}'), 'x');
    assert.equal(f('${E-x}'), '');
    assert.equal(f('${A:+on}/${B:+on}'), 'on/');
    assert.equal(f('$$A'), '$A');
    assert.deepEqual(problems, []);
    assert.equal(f('${NOPE}'), '');
    assert.deepEqual(problems, ['variable NOPE is not set: using an empty string']);
  });

  test('ports from variables; unset variable warns', () => {
    const text = 'services:\n  a: {depends_on: [b]}\n  b:\n    ports: ["${HOST_PORT:-8080}:${APP_PORT}"]\n    expose: ["${X}9"]\n';
    const p = composeTextToPolicies(text, { file: 'v.yaml', env: { APP_PORT: '3000' } });
    assert.deepEqual(p.policies[0]!.ports, ['9/tcp', '3000/tcp']);
    assert.deepEqual(p.warnings, ['v.yaml: services.b.expose[0]: variable X is not set: using an empty string']);
  });

  test('services Bastion cannot protect are named', () => {
    const text = [
      'services:',
      '  h: {network_mode: host}',
      '  p: {privileged: true}',
      '  n: {cap_add: [NET_ADMIN]}',
      '  s: {network_mode: "service:h"}',
      '  x: {external_links: [other_db]}',
    ].join('\n');
    const p = composeTextToPolicies(text, { file: 'w.yaml' });
    assert.deepEqual(p.policies, []);
    assert.deepEqual(p.warnings, [
      'w.yaml: services.x.external_links: containers outside this file are not known here: ignored',
      'service h has network_mode: host: Bastion cannot protect its containers; its policies are emitted but do not apply to it',
      'service p has privileged: true: Bastion cannot protect its containers; its policies are emitted but do not apply to it',
      'service n has cap_add: NET_ADMIN: Bastion cannot protect its containers; its policies are emitted but do not apply to it',
      'service s has network_mode: service:h: Bastion cannot protect its containers; its policies are emitted but do not apply to it',
    ]);
    assert.match(renderComposeYaml(p, 'w.yaml'), /No dependency edge: every service is isolated from every other\.\n\nmode: enforce\npolicies: \[\]\n$/);
  });

  test('YAML merge keys (x- extension fields) work', () => {
    const text = 'x-base: &base\n  expose: ["80"]\nservices:\n  a: {depends_on: [b]}\n  b:\n    <<: *base\n';
    assert.deepEqual(composeTextToPolicies(text).policies[0]!.ports, ['80/tcp']);
  });
});

describe('bastion compose (CLI)', () => {
  async function cli(args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
    const program = new Command();
    program.exitOverride();
    registerCompose(program);
    let stdout = '';
    let stderr = '';
    const ow = process.stdout.write.bind(process.stdout);
    const ew = process.stderr.write.bind(process.stderr);
    const saved: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(env)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    process.stdout.write = ((s: string) => ((stdout += s), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => ((stderr += s), true)) as typeof process.stderr.write;
    let code = 0;
    try {
      await program.parseAsync(['compose', ...args], { from: 'user' });
    } catch (err) {
      if (err instanceof InputFileError) {
        code = err.invalidInput ? EXIT.invalid : EXIT.failure;
        stderr += `bastion: ${err.message}\n`;
      } else if (err instanceof CliError) code = err.exitCode;
      else if ((err as { code?: string }).code?.startsWith('commander.')) code = EXIT.usage; // as main() does
      else throw err;
      if (err instanceof CliError) stderr += `bastion: ${err.message}\n`;
    } finally {
      process.stdout.write = ow;
      process.stderr.write = ew;
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    return { stdout, stderr, code };
  }

  test('prints the expected YAML, warnings on stderr', async () => {
    const r = await cli([join(FIX, 'shop.compose.yaml')]);
    assert.equal(r.code, 0);
    const want = readFileSync(join(FIX, 'shop.expected.yaml'), 'utf8').replace('from shop.compose.yaml', `from ${join(FIX, 'shop.compose.yaml')}`);
    assert.equal(r.stdout, want);
    assert.match(r.stderr, /^bastion: warning: service queue declares no ports/m);
  });

  test('-o json prints exactly the expected JSON', async () => {
    const r = await cli([join(FIX, 'shop.compose.yaml'), '-o', 'json']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, readFileSync(join(FIX, 'shop.expected.json'), 'utf8'));
  });

  test('--project, --no-project, COMPOSE_PROJECT_NAME, directory name', async () => {
    const p1 = JSON.parse((await cli([join(FIX, 'shop.compose.yaml'), '-o', 'json', '-p', 'prod'])).stdout);
    assert.equal(p1.policies[0].from['com.docker.compose.project'], 'prod');
    const p2 = JSON.parse((await cli([join(FIX, 'shop.compose.yaml'), '-o', 'json', '--no-project'])).stdout);
    assert.deepEqual(p2.policies[0].from, { 'bastion.io/compose-service': 'api' });
    const p3 = JSON.parse((await cli([join(FIX, 'shop.compose.yaml'), '-o', 'json'], { COMPOSE_PROJECT_NAME: 'fromenv' })).stdout);
    assert.equal(p3.policies[0].from['com.docker.compose.project'], 'fromenv');
    // no name: in the file → the directory's name, normalised as Compose does
    const dir = join(mkdtempSync(join(tmpdir(), 'bastion-compose-')), 'My App');
    mkdirSync(dir);
    try {
      writeFileSync(join(dir, 'compose.yaml'), 'services:\n  a: {links: [b]}\n  b: {expose: [80]}\n');
      const p4 = JSON.parse((await cli([join(dir, 'compose.yaml'), '-o', 'json'])).stdout);
      assert.deepEqual(p4.policies, [
        { name: 'a-to-b', from: sel('a', 'myapp'), to: sel('b', 'myapp'), ports: ['80/tcp'] },
      ]);
    } finally {
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });

  test('invalid Compose file: exit 3, every error with file, line and field', async () => {
    const r = await cli([join(FIX, 'bad.compose.yaml')]);
    assert.equal(r.code, EXIT.invalid);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /invalid Compose file \(5 errors\):/);
    assert.match(r.stderr, /bad\.compose\.yaml:6:9: services\.web\.depends_on\[1\]: service "nosuch" is not defined in services/);
  });

  test('unreadable file, bad format, bad --unported', async () => {
    const r1 = await cli(['/nonexistent/compose.yaml']);
    assert.equal(r1.code, EXIT.failure);
    assert.match(r1.stderr, /\/nonexistent\/compose\.yaml: cannot read: no such file \(ENOENT\)/);
    assert.equal((await cli([join(FIX, 'shop.compose.yaml'), '-o', 'table'])).code, EXIT.usage);
    assert.equal((await cli([join(FIX, 'shop.compose.yaml'), '--unported', 'some'])).code, EXIT.usage);
  });
});
