/**
 * Bastion's own coverage: which containers it does not protect and why,
 * which no policy names, which policies open too much and which select
 * nothing. Pure: the containers come as Docker inspect data and go through
 * the Docker adapter's own mapping (the code that decides what the daemon
 * protects), policies come from the real config loader, rules from the
 * policy compiler's model, and the daemon's view from its status.
 */
import { desiredForContainer, shortId, type DockerNetwork } from '../platform/docker/mapping.js';
import type { EndpointSpec } from '../manager/endpoint.js';
import type { Mode, Rule } from '../policy/model.js';
import { formatPolicyEnd, type PolicyConfig, type PolicyEnd } from '../policy/bastion-config.js';
import { LabelIndex, formatSelector, matches } from '../policy/selector.js';
import { formatPortRange } from '../policy/ports.js';
import type { AuditObject, Finding } from './findings.js';
import { finding } from './rules.js';
import { containerObject, type AuditInspect } from './docker-rules.js';

/** What the audit needs of a running daemon: /v1/status, or the daemon's own state when it audits itself. */
export interface DaemonView {
  pinPath: string;
  mode: Mode;
  endpoints: Array<{ key: string; name: string; mode: string; stackOk: boolean }>;
  unprotected: Array<{ key: string; name: string; reason: string }>;
}

/** The policies in force (or about to be): what they say, and the rules they compile to. */
export interface PolicyView {
  mode: Mode;
  /** where each came from: "bastion.yaml", "runtime (bastion policy add)" */
  policies: Array<{ policy: PolicyConfig; source: string }>;
  /** every rule, policies' and others' (a Compose file's) */
  rules: Rule[];
}

export interface CoverageInput {
  /** running containers, when Docker is audited */
  containers?: AuditInspect[];
  networks?: ReadonlyMap<string, DockerNetwork>;
  /** undefined: no daemon answers on pinPath */
  daemon?: DaemonView;
  pinPath: string;
  policies?: PolicyView;
}

/** The Bastion endpoints (or why none) of each running container, as the Docker adapter computes them. */
export function dockerEndpoints(containers: readonly AuditInspect[], networks: ReadonlyMap<string, DockerNetwork>): Array<{ info: AuditInspect; endpoints: EndpointSpec[]; unprotected: Array<{ key: string; name: string; reason: string }> }> {
  return containers.map((info) => ({ info, ...desiredForContainer(info, { networks }) }));
}

export function auditCoverage(input: CoverageInput): Finding[] {
  const out: Finding[] = [];
  const daemon = input.daemon;
  if (!daemon && input.containers) {
    out.push(
      finding('bastion.not-running', { kind: 'daemon', name: `bastion (${input.pinPath})` }, [
        { field: 'API socket', value: `no daemon answers for pin path ${input.pinPath}` },
      ]),
    );
  } else if (daemon) {
    for (const ep of daemon.endpoints) {
      if (!ep.stackOk) {
        out.push(finding('bastion.stack-missing', { kind: 'container', name: ep.name, ...idOfKey(ep.key) }, [{ field: `/v1/status endpoints[${ep.key}].stack.ok`, value: 'false' }]));
      }
    }
  }

  const mapped = input.containers && input.networks ? dockerEndpoints(input.containers, input.networks) : [];
  const managed = new Map((daemon?.endpoints ?? []).map((e) => [e.key, e]));
  const daemonUnprotected = new Map((daemon?.unprotected ?? []).map((u) => [u.key, u]));
  const protectable: Array<{ spec: EndpointSpec; obj: AuditObject; mode: Mode }> = [];
  for (const m of mapped) {
    const obj = containerObject(m.info);
    for (const u of m.unprotected) {
      const reason = daemonUnprotected.get(u.key)?.reason ?? u.reason;
      out.push(finding('bastion.unprotected', obj, [{ field: u.key === `docker:${obj.id}` ? 'container' : `network ${u.name.split('/').pop()}`, value: reason }]));
    }
    for (const spec of m.endpoints) {
      const ep = managed.get(spec.key);
      if (!daemon) {
        out.push(finding('bastion.unprotected', obj, [{ field: 'daemon', value: `no Bastion daemon runs for ${input.pinPath}: nothing attaches a stack to its interface` }]));
      } else if (!ep) {
        out.push(
          finding('bastion.unprotected', obj, [
            { field: 'daemon', value: `the daemon on ${daemon.pinPath} does not manage ${spec.key} (it does not follow Docker, or the container is outside its --select)` },
          ]),
        );
      }
      protectable.push({ spec, obj, mode: ep?.mode === 'audit' || ep?.mode === 'enforce' ? ep.mode : daemon?.mode ?? input.policies?.mode ?? 'enforce' });
    }
  }

  const pol = input.policies;
  if (pol) {
    for (const { spec, obj, mode } of protectable) {
      if (pol.rules.some((r) => matches(r.subject, spec.labels))) continue;
      out.push(
        finding(
          'bastion.no-policy',
          obj,
          [
            { field: 'endpoint labels', value: labelText(spec.labels) },
            { field: 'mode', value: mode === 'audit' ? 'audit: everything it sends and receives passes (and is recorded)' : 'enforce: it can reach nothing and nothing reaches it' },
          ],
          mode === 'enforce' ? { severity: 'low' } : {},
        ),
      );
    }
    for (const { policy, source } of pol.policies) {
      const wide = widePolicyEvidence(policy);
      if (wide) out.push(finding('bastion.wide-policy', { kind: 'policy', name: policy.name, file: source }, wide));
    }
    if (input.containers) {
      const index = new LabelIndex<number>();
      protectable.forEach((p, i) => index.set(i, p.spec.labels));
      for (const { policy, source } of pol.policies) {
        for (const which of ['from', 'to'] as const) {
          const end = policy[which];
          if (end.kind !== 'endpoints' || index.select(end.selector).length > 0) continue;
          out.push(
            finding('bastion.selector-matches-nothing', { kind: 'policy', name: policy.name, file: source }, [
              { field: which, value: formatSelector(end.selector) },
              { field: 'containers', value: `${protectable.length} protectable running container${protectable.length === 1 ? '' : 's'}, none with these labels` },
            ]),
          );
        }
      }
    }
  }
  return out;
}

/** Evidence that a policy lets the world or the host in (or out) on every port, or undefined. */
export function widePolicyEvidence(p: PolicyConfig): Array<{ field: string; value: string }> | undefined {
  const open = (e: PolicyEnd) => e.kind === 'host' || (e.kind === 'cidr' && /\/0$/.test(e.cidr));
  const which = open(p.to) ? 'to' : open(p.from) ? 'from' : undefined;
  if (!which) return undefined;
  const ports = p.ports;
  const every = ports === undefined || ports.length === 0 || ports.some((r) => r.protocol === 'any' || (r.protocol !== 'icmp' && r.from <= 1 && r.to >= 65535));
  if (!every) return undefined;
  return [
    { field: which, value: formatPolicyEnd(p[which]) },
    { field: 'ports', value: ports?.length ? ports.map(formatPortRange).join(', ') : '(none: every protocol and port)' },
  ];
}

function labelText(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}

/** docker:<id12>/<network> → the container's id. */
function idOfKey(key: string): { id?: string } {
  const m = /^docker:([0-9a-f]{12})/.exec(key);
  return m ? { id: shortId(m[1]!) } : {};
}
