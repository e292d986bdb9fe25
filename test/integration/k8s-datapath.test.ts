/**
 * Issue 4, "what it must show" #2: the upstream Kubernetes e2e
 * network-policy scenarios (test/fixtures/k8s/e2e-scenarios.ts) probed end to
 * end through the real datapath with real connections, and the probed
 * matrix equal to the engine's (computeMatrix) at every step.
 *
 * The nine pods x/a … z/c are network namespaces on one bridge, at the
 * model's addresses remapped into a /24 of the test's own (see
 * test/helpers/k8s-probe.ts; ipBlocks are remapped with them, and the
 * engine's matrix over the remapped cluster is checked against the fixture's
 * expected table). Every pod runs TCP and UDP echo listeners on every port
 * the chosen checks use. One Manager with the libbpf datapath (its own pin
 * path) protects all nine; for each scenario step the cluster is compiled
 * with the Kubernetes compiler and applied with setPolicy (endpoints whose
 * labels change are upserted again), so policies change live on running
 * stacks from one step and one scenario to the next. Bastion's conntrack is
 * flushed between steps (every probe also uses a fresh client socket).
 *
 * SCTP: this kernel has no SCTP sockets (socket(AF_INET, SOCK_STREAM,
 * IPPROTO_SCTP) fails with EPROTONOSUPPORT, although socat knows SCTP), so
 * SCTP checks cannot be probed with real connections here; they are covered
 * by the unit tests (test/unit/k8s-e2e-scenarios.test.ts,
 * test/unit/k8s-compile.test.ts). The summary printed at the end names the
 * SCTP checks left out.
 *
 * BASTION_K8S_SCENARIOS=all probes every scenario of the fixture instead of
 * the chosen ones.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import pino from 'pino';
import { Manager } from '../../src/manager/manager.js';
import type { EndpointSpec } from '../../src/manager/endpoint.js';
import { openDatapath, type DatapathAgent } from '../../src/agent/datapath-agent.js';
import { NodeAgent } from '../../src/agent/node-agent.js';
import { tearDown } from '../../src/agent/cleanup.js';
import { compileToPolicySet, toPolicySet, computeMatrix, diffMatrices, formatMatrix, type K8sProtocol } from '../../src/policy/k8s/index.js';
import { SCENARIOS, type Scenario } from '../fixtures/k8s/e2e-scenarios.js';
import { ALL_PODS } from '../fixtures/k8s/e2e-model.js';
import { createTopology, freeSubnet24, type Topology } from '../helpers/netns.js';
import { startTcpEcho, startUdpEcho, stopBackground } from '../helpers/probes.js';
import { pool, probeAllPairs, probeOnce, remappedCluster, remappedPodIp, type PairResult, type ProbePod } from '../helpers/k8s-probe.js';

/** Chosen to cover every kind of rule the issue names (the comment says which). */
const CHOSEN = [
  "should support a 'default-deny-ingress' policy", // default deny
  "should support a 'default-deny-all' policy (deny-all-tcp-allow-dns variant)", // deny all + egress UDP 53 elsewhere
  'should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector', // from a namespace
  'should enforce policy based on PodSelector or NamespaceSelector', // OR of peers
  'should enforce policy based on PodSelector and NamespaceSelector', // AND within a peer
  'should enforce policy based on Multiple PodSelectors and NamespaceSelectors', // matchExpressions In / NotIn
  'should allow ingress access from namespace on one named port', // named port, ingress
  'should allow egress access on one named port (with UDP 53)', // named port, egress, per protocol
  '(bastion) should enforce an ingress port range with endPort', // endPort
  '(bastion) should enforce an egress port range with endPort', // endPort, egress
  'should enforce except clause while egress access to server in CIDR block', // ipBlock with except
  'should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed', // ipBlock, updated policy
  '(bastion) ipBlock on ingress matches client pod IPs, except excluded', // ipBlock on ingress
  'should enforce multiple, stacked policies with overlapping podSelectors', // policies adding up, over time
  'should enforce multiple egress policies with egress allow-all policy taking precedence', // adding up, egress
  'should work with Ingress, Egress specified together', // egress + ingress
  'should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)', // both sides
  'should enforce ingress policy allowing any port traffic to a server on a specific protocol', // protocol only, TCP vs UDP
  'UDP: should enforce policy based on Ports', // UDP
  'UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector', // UDP
  'should enforce updated policy', // a policy change over time
  'should allow ingress access from updated pod', // a label change over time (endpoint upsert)
  'should allow ingress access from updated namespace', // a namespace label change over time
  "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", // SCTP ≠ TCP (TCP half)
  '(bastion) DoesNotExist and Exists selectors', // Exists / DoesNotExist
  'should stop enforcing policies after they are deleted', // back to no policy
];

const ALL = process.env.BASTION_K8S_SCENARIOS === 'all';
const chosen: Scenario[] = ALL
  ? SCENARIOS
  : CHOSEN.map((name) => {
      const s = SCENARIOS.find((x) => x.name === name);
      if (!s) throw new Error(`no scenario named ${JSON.stringify(name)} in the fixture`);
      return s;
    });

/** Real sockets exist for these protocols here (see the file comment for SCTP). */
const PROBED: K8sProtocol[] = ['TCP', 'UDP'];
const TCP_PORTS = new Set<number>([80, 81]);
const UDP_PORTS = new Set<number>([80, 81]);
for (const s of chosen)
  for (const st of s.steps)
    for (const c of st.checks) {
      if (c.protocol === 'TCP') TCP_PORTS.add(c.port);
      if (c.protocol === 'UDP') UDP_PORTS.add(c.port);
    }

const CONCURRENCY = 36;
const TIMEOUT_S = 1;
/** a pair the probe finds closed although the engine says open is probed once more, more patiently */
const RETRY_TIMEOUT_S = 3;

interface Report {
  scenario: string;
  steps: number;
  checks: string[];
  skipped: string[];
  pairs: number;
  ms: number;
  retried: string[];
  ok: boolean;
}
const reports: Report[] = [];

describe('Kubernetes e2e network-policy scenarios through the real datapath', { timeout: 600_000 }, () => {
  const pinPath = `/sys/fs/bpf/bastion-k8s-${randomBytes(4).toString('hex')}`;
  let topo: Topology | undefined;
  let datapath: DatapathAgent | undefined;
  let manager: Manager;
  let base: string;
  let pods: ProbePod[] = [];
  /** what each endpoint was last upserted with */
  const applied = new Map<string, string>();
  const t0 = Date.now();
  let skippedSctp = 0;

  const specFor = (key: string, labels: Record<string, string>, namedPorts: EndpointSpec['namedPorts']): EndpointSpec => ({
    key: `k8s:${key}`,
    name: key,
    netns: { kind: 'name', name: pods.find((p) => p.key === key)!.netns },
    interface: 'eth0',
    labels,
    ...(namedPorts ? { namedPorts } : {}),
  });

  before(async () => {
    base = await freeSubnet24();
    topo = await createTopology({
      bridgeIp: `${base}.1/24`,
      containers: ALL_PODS.map((key) => {
        const [ns, pod] = key.split('/') as [string, string];
        return { name: `${ns}-${pod}`, ip: remappedPodIp(base, ns, pod) };
      }),
    });
    pods = ALL_PODS.map((key) => {
      const c = topo!.container(key.replace('/', '-'));
      return { key, netns: c.netns, ip: c.ip };
    });

    // listeners: every pod, every port, TCP and UDP echo servers
    const listeners = pods.flatMap((p) => [
      ...[...TCP_PORTS].map((port) => () => startTcpEcho(p.netns, p.ip, port)),
      ...[...UDP_PORTS].map((port) => () => startUdpEcho(p.netns, p.ip, port)),
    ]);
    await pool(listeners, 16, (start) => start());

    // baseline without Bastion: every probe connects, so a failed probe later means "dropped"
    const broken: string[] = [];
    for (const protocol of PROBED)
      for (const port of protocol === 'TCP' ? TCP_PORTS : UDP_PORTS) {
        const { results } = await probeAllPairs(pods, port, protocol, { concurrency: CONCURRENCY, timeoutS: 2 });
        for (const r of results) if (!r.ok) broken.push(`${protocol}/${port} ${r.from} -> ${r.to}: ${r.detail}`);
      }
    assert.deepEqual(broken, [], `without Bastion every probe must succeed:\n${broken.join('\n')}`);

    // one Manager with the real datapath for the whole file
    const log = pino({ level: 'silent' });
    datapath = await openDatapath(pinPath, log);
    const node = new NodeAgent();
    manager = new Manager({ datapath, node, log });
    await manager.setHostAddresses(await node.hostAddresses());
    const compiled = compileToPolicySet(remappedCluster(base, []));
    await manager.setPolicy(toPolicySet(compiled, 'enforce'));
    for (const p of pods) {
      const labels = compiled.endpointLabels.get(p.key)!;
      const ep = await manager.upsertEndpoint(specFor(p.key, labels, compiled.namedPorts.get(p.key)));
      assert.equal(ep?.ipv4, p.ip, `${p.key}: discovered address`);
      applied.set(p.key, JSON.stringify(labels));
    }
    await manager.pruneLeftovers();
  });

  after(async () => {
    const errors: unknown[] = [];
    const attempt = async (what: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (e) {
        errors.push(new Error(`${what}: ${(e as Error).message}`));
      }
    };
    await attempt('stop listeners', () => stopBackground());
    await attempt('close datapath', () => datapath?.close());
    await attempt('tear down pins and stacks', () => tearDown(pinPath));
    await attempt('destroy topology', () => topo?.destroy());
    if (existsSync(pinPath)) errors.push(new Error(`${pinPath} is still there`));

    const total = ((Date.now() - t0) / 1000).toFixed(1);
    const lines = reports.map(
      (r) =>
        `${r.ok ? 'ok  ' : 'FAIL'} ${(r.ms / 1000).toFixed(1).padStart(5)}s  ${r.steps} step(s), ${r.pairs} pairs, ${r.checks.join(' ')}` +
        `${r.skipped.length ? ` (not probed: ${r.skipped.join(' ')})` : ''}${r.retried.length ? ` [re-probed: ${r.retried.join('; ')}]` : ''}  ${r.scenario}`,
    );
    console.log(
      `\nk8s e2e scenarios through the datapath: ${reports.filter((r) => r.ok).length}/${reports.length} scenarios equal to the engine, ` +
        `${reports.reduce((n, r) => n + r.pairs, 0)} probes, ${skippedSctp} SCTP check(s) not probed, ${total}s in all\n${lines.join('\n')}`,
    );
    if (errors.length) throw errors[0];
  });

  for (const scenario of chosen) {
    const probeable = scenario.steps.some((st) => st.checks.some((c) => PROBED.includes(c.protocol)));
    const skip = probeable ? false : 'SCTP only: no SCTP sockets in this kernel (covered by the unit tests)';
    it(scenario.name, { timeout: 180_000, skip }, async () => {
      assert.ok(datapath, 'the datapath did not start');
      const started = Date.now();
      const report: Report = { scenario: scenario.name, steps: scenario.steps.length, checks: [], skipped: [], pairs: 0, ms: 0, retried: [], ok: false };
      reports.push(report);
      const failures: string[] = [];

      for (const [i, step] of scenario.steps.entries()) {
        const cluster = remappedCluster(base, step.policies, step.model);
        const compiled = compileToPolicySet(cluster);
        // the policy swap, live on the running stacks
        await manager.setPolicy(toPolicySet(compiled, 'enforce'));
        // label changes (pods or their namespace): the endpoint keeps its identity, its labels change
        for (const p of pods) {
          const labels = compiled.endpointLabels.get(p.key)!;
          const text = JSON.stringify(labels);
          if (applied.get(p.key) === text) continue;
          const ep = await manager.upsertEndpoint(specFor(p.key, labels, compiled.namedPorts.get(p.key)));
          assert.equal(ep?.ipv4, p.ip);
          applied.set(p.key, text);
        }
        datapath.flushConntrack(pods.map((p) => p.ip));

        for (const check of step.checks) {
          const what = `step ${i + 1} ${check.protocol}/${check.port}`;
          if (!PROBED.includes(check.protocol)) {
            report.skipped.push(`${check.protocol}/${check.port}`);
            skippedSctp++;
            continue;
          }
          report.checks.push(`${check.protocol}/${check.port}`);
          const engine = computeMatrix(cluster, check.port, check.protocol);
          // the remapped cluster means what the fixture's does
          const fixture = check.expect.toMatrix();
          const remapDiff = diffMatrices(fixture, engine);
          if (remapDiff.length) {
            failures.push(`${what}: the engine over the remapped cluster differs from the fixture's table (remapping?):\n${remapDiff.join('\n')}`);
            continue;
          }

          const { matrix: probed, results } = await probeAllPairs(pods, check.port, check.protocol, { concurrency: CONCURRENCY, timeoutS: TIMEOUT_S });
          report.pairs += results.length;
          const refused = results.filter((r) => r.refused);
          // closed where the engine says open: one more, patient, attempt (a slow first probe is not a verdict)
          const suspects = results.filter((r) => !r.ok && engine.allowed[r.from]![r.to]);
          const podOf = (key: string) => pods.find((p) => p.key === key)!;
          const retried: PairResult[] = await pool(suspects, CONCURRENCY, async (r) => ({
            ...r,
            ...(await probeOnce(podOf(r.from).netns, podOf(r.to).ip, check.port, check.protocol, RETRY_TIMEOUT_S)),
          }));
          for (const r of retried) {
            report.retried.push(`${what} ${r.from}->${r.to} ${r.ok ? 'connected' : 'still closed'}`);
            probed.allowed[r.from]![r.to] = r.ok;
          }
          const diff = diffMatrices(engine, probed);
          if (diff.length || refused.length) {
            const detail = results
              .filter((r) => diff.some((d) => d.startsWith(`${r.from} -> ${r.to}:`)))
              .map((r) => `  ${r.from} -> ${r.to}: ${r.detail} (${r.ms} ms)`);
            failures.push(
              `${what}: probed matrix differs from the engine's\n` +
                `engine (computeMatrix):\n${formatMatrix(engine)}probed:\n${formatMatrix(probed)}` +
                `differences (expected = engine):\n${diff.join('\n')}\n` +
                (detail.length ? `probes:\n${detail.join('\n')}\n` : '') +
                (refused.length ? `refused (nothing listening?):\n${refused.map((r) => `  ${r.from} -> ${r.to}: ${r.detail}`).join('\n')}\n` : ''),
            );
          }
        }
      }
      report.ms = Date.now() - started;
      report.ok = failures.length === 0;
      if (failures.length) assert.fail(failures.join('\n'));
    });
  }
});
