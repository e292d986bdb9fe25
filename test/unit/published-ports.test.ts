/**
 * Published ports as policy (src/policy/published.ts): what Docker's
 * inspect data says is published, and what each --published-ports mode
 * lets in. The end-to-end proof on a real dockerd is in
 * test/integration/docker-published.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { publishedPortsOf } from '../../src/platform/docker/mapping.js';
import { isLoopbackHostIp, publishedAccess, publishedPolicies } from '../../src/policy/published.js';
import { policyToRules } from '../../src/policy/bastion-config.js';

describe('published ports', () => {
  it('reads the bindings of docker inspect: loopback kept, 0.0.0.0 and :: as every address, exposed-only ignored', () => {
    const ports = publishedPortsOf({
      NetworkSettings: {
        Ports: {
          '80/tcp': [
            { HostIp: '0.0.0.0', HostPort: '8080' },
            { HostIp: '::', HostPort: '8080' },
          ],
          '443/tcp': [{ HostIp: '127.0.0.1', HostPort: '18443' }],
          '53/udp': [{ HostIp: '', HostPort: '5353' }],
          '9000/tcp': null,
        },
      },
    });
    assert.deepEqual(ports, [
      { protocol: 'tcp', from: 80, to: 80 },
      { protocol: 'tcp', from: 443, to: 443, hostIp: '127.0.0.1' },
      { protocol: 'udp', from: 53, to: 53 },
    ]);
  });

  it('allow: from the host every published port, from outside those not bound to loopback; host-only; deny', () => {
    const ports = [
      { protocol: 'tcp' as const, from: 80, to: 80 },
      { protocol: 'tcp' as const, from: 443, to: 443, hostIp: '127.0.0.1' },
    ];
    assert.deepEqual(publishedAccess(ports, 'allow'), {
      fromHost: [{ protocol: 'tcp', from: 80, to: 80 }, { protocol: 'tcp', from: 443, to: 443 }],
      fromOutside: [{ protocol: 'tcp', from: 80, to: 80 }],
    });
    assert.deepEqual(publishedAccess(ports, 'host-only').fromOutside, []);
    assert.deepEqual(publishedAccess(ports, 'deny'), { fromHost: [], fromOutside: [] });
    assert.ok(isLoopbackHostIp('127.0.0.53') && isLoopbackHostIp('[::1]') && !isLoopbackHostIp('10.0.0.1') && !isLoopbackHostIp(undefined));
  });

  it('as policies: ingress rules on the endpoint only, from host and from 0.0.0.0/0, named so they cannot clash', () => {
    const labels = { 'bastion.io/name': 'web', 'bastion.io/network': 'app' };
    const pols = publishedPolicies('web', labels, [{ protocol: 'tcp', from: 80, to: 80 }], 'allow');
    assert.deepEqual(pols.map((p) => p.name), ['published:web:from-host', 'published:web:from-outside']);
    const rules = pols.flatMap(policyToRules);
    assert.deepEqual(
      rules.map((r) => [r.direction, r.peers.map((p) => (p.kind === 'cidr' ? p.cidr : p.kind)).join(), r.subject]),
      [
        ['ingress', 'host', { matchLabels: labels }],
        ['ingress', '0.0.0.0/0', { matchLabels: labels }],
      ],
    );
    assert.deepEqual(publishedPolicies('web', labels, [], 'allow'), []);
  });
});
