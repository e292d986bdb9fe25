/**
 * The posture audit: gathers the facts (Docker engine and containers, a
 * running daemon's view, the policies, Kubernetes objects), runs the rules
 * over them and returns one report. Used by `bastion audit` and by the
 * daemon (GET /v1/audit, `bastion status`).
 */
import { loadConfigSource } from '../daemon/config-source.js';
import { RuntimePolicies } from '../daemon/runtime-policies.js';
import { apiRequest, DaemonUnreachable } from '../api/client.js';
import { policiesFileFor, socketPathFor } from '../api/paths.js';
import type { StatusReport } from '../api/types.js';
import type { Mode } from '../policy/model.js';
import { K8sInputError, readCluster } from '../policy/k8s/objects.js';
import { auditCoverage, type DaemonView, type PolicyView } from './bastion-rules.js';
import { auditContainer, auditEngine } from './docker-rules.js';
import { collectDocker, type CollectOptions } from './docker-collect.js';
import { auditKubernetes } from './k8s-rules.js';
import { makeReport, type AuditReport, type Finding, type Skipped } from './findings.js';

export interface AuditOptions {
  docker?: boolean | CollectOptions;
  k8sFiles?: string[];
  /** a Bastion config file: its policies are audited, and used for coverage */
  configPath?: string;
  /** the instance whose daemon is asked (default /sys/fs/bpf/bastion) */
  pinPath: string;
  /**
   * the daemon's view when the daemon audits itself; otherwise it is asked
   * through its API socket ('ask', the default)
   */
  daemon?: DaemonView | 'ask';
  /** the policies in force when the daemon audits itself; otherwise read from configPath (and the daemon's files) */
  policies?: PolicyView;
}

/** Invalid input (a config file or Kubernetes objects that do not validate). */
export class AuditInputError extends Error {}

export function daemonViewOf(s: StatusReport): DaemonView {
  return {
    pinPath: s.daemon.pinPath,
    mode: s.daemon.mode as Mode,
    endpoints: s.endpoints.map((e) => ({ key: e.key, name: e.name, mode: e.mode, stackOk: e.stack.ok })),
    unprotected: s.unprotected,
  };
}

async function askDaemon(pinPath: string): Promise<{ view?: DaemonView; configPath?: string }> {
  try {
    const s = await apiRequest<StatusReport>(socketPathFor(pinPath), 'GET', '/v1/status');
    return { view: daemonViewOf(s), ...(s.daemon.configPath ? { configPath: s.daemon.configPath } : {}) };
  } catch (err) {
    if (err instanceof DaemonUnreachable) return {};
    throw err;
  }
}

/** The policies of a config file, plus a running daemon's runtime policies (read with the daemon's own loaders). */
async function readPolicies(configPath: string | undefined, pinPath: string, withRuntime: boolean, mode: Mode | undefined): Promise<PolicyView | undefined> {
  const view: PolicyView = { mode: mode ?? 'enforce', policies: [], rules: [] };
  let any = false;
  if (configPath) {
    const loaded = await loadConfigSource(configPath, { containersRequired: false });
    if (!loaded.ok) throw new AuditInputError(loaded.errors.join('\n'));
    any = true;
    if (!mode) view.mode = loaded.policy.mode;
    view.policies.push(...loaded.policies.map((policy) => ({ policy, source: configPath })));
    view.rules.push(...loaded.policy.rules);
  }
  if (withRuntime) {
    const runtime = new RuntimePolicies(policiesFileFor(pinPath));
    const r = runtime.load();
    if (r.errors.length === 0) {
      any = true;
      for (const p of runtime.all()) view.policies.push({ policy: p.policy, source: `${policiesFileFor(pinPath)} (bastion policy add)` });
      view.rules.push(...runtime.rules());
    }
  }
  return any ? view : undefined;
}

export async function runAudit(o: AuditOptions): Promise<AuditReport> {
  const findings: Finding[] = [];
  const skipped: Skipped[] = [];
  const sources: string[] = [];
  const warnings: string[] = [];

  let daemon: DaemonView | undefined;
  let daemonConfig: string | undefined;
  if (o.daemon && o.daemon !== 'ask') daemon = o.daemon;
  else if (o.docker || o.configPath) ({ view: daemon, configPath: daemonConfig } = await askDaemon(o.pinPath));

  let policies = o.policies;
  if (!policies && (o.configPath || daemon)) {
    policies = await readPolicies(o.configPath ?? daemonConfig, o.pinPath, daemon !== undefined, daemon?.mode);
    if (daemon && !o.configPath && !daemonConfig) {
      skipped.push({ check: 'policies of a Compose file', reason: 'the daemon has no config file; policies it took from a Compose file are not visible to `bastion audit` (GET /v1/audit sees them)' });
    }
  }
  if (policies) sources.push('policies');
  else if (o.docker) skipped.push({ check: 'containers no policy names', reason: 'no policies: give --config FILE, or run the audit where a daemon runs' });

  if (o.docker) {
    const facts = await collectDocker(typeof o.docker === 'object' ? o.docker : {});
    sources.push('docker');
    skipped.push(...facts.skipped);
    findings.push(...auditEngine(facts.engine));
    const enforced = new Set<string>();
    for (const ep of daemon?.endpoints ?? []) {
      const m = /^docker:([0-9a-f]{12})\//.exec(ep.key);
      if (m && ep.stackOk && ep.mode === 'enforce') enforced.add(m[1]!);
    }
    for (const c of facts.containers) findings.push(...auditContainer(c, { engine: facts.engine, enforced }));
    findings.push(
      ...auditCoverage({
        containers: facts.containers.map((c) => c.inspect),
        networks: facts.networks,
        pinPath: o.pinPath,
        ...(daemon ? { daemon } : {}),
        ...(policies ? { policies } : {}),
      }),
    );
  } else if (policies || daemon) {
    findings.push(...auditCoverage({ pinPath: o.pinPath, ...(daemon ? { daemon } : {}), ...(policies ? { policies } : {}) }));
  }

  if (o.k8sFiles?.length) {
    let cluster;
    try {
      cluster = await readCluster(o.k8sFiles);
    } catch (err) {
      if (err instanceof K8sInputError) throw new AuditInputError(err.message);
      throw err;
    }
    sources.push('kubernetes');
    const k = auditKubernetes(cluster);
    findings.push(...k.findings);
    skipped.push(...k.skipped);
    warnings.push(...cluster.warnings);
  }
  return makeReport(sources, findings, skipped, warnings);
}
