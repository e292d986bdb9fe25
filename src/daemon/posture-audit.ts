/**
 * The posture audit (src/audit) over what this daemon holds (GET /v1/audit,
 * `bastion status`): its endpoints and their stacks, the containers it
 * cannot protect, the policies of its config file and runtime, and every
 * rule it enforces (a Compose file's too); the Docker engine and containers
 * when it follows Docker. One run at a time, the last report kept.
 */
import type { Manager } from '../manager/manager.js';
import { AuditCache } from '../audit/daemon-audit.js';
import type { AuditReport } from '../audit/findings.js';
import type { PolicyConfig } from '../policy/bastion-config.js';
import type { RuntimePolicies } from './runtime-policies.js';

export interface PostureSources {
  pinPath: string;
  configPath?: string;
  /** the platform the daemon follows ('docker': the engine and containers are audited too) */
  platform?: string;
  /** where runtime policies are kept, to name their source */
  runtimeFile: string;
  manager(): Manager | undefined;
  filePolicies(): PolicyConfig[];
  runtime: RuntimePolicies;
}

export function postureAudit(src: PostureSources): AuditCache {
  return new AuditCache(async (): Promise<AuditReport> => {
    const m = src.manager();
    if (!m) throw new Error('the daemon has not started');
    // loaded on first use: the Docker client is a large part of the daemon's memory
    const { runAudit } = await import('../audit/audit.js');
    const dp = m.datapath;
    return runAudit({
      docker: src.platform === 'docker',
      pinPath: src.pinPath,
      daemon: {
        pinPath: src.pinPath,
        mode: m.mode,
        endpoints: [...m.endpoints.values()].map((ep) => ({ key: ep.key, name: ep.name, mode: ep.mode ?? m.mode, stackOk: dp.stackState(ep.hostIfindex).ok })),
        unprotected: [...m.unprotected.values()].map((u) => ({ key: u.key, name: u.name, reason: u.reason })),
      },
      policies: {
        mode: m.mode,
        policies: [
          ...src.filePolicies().map((policy) => ({ policy, source: src.configPath ?? 'config' })),
          ...src.runtime.all().map((r) => ({ policy: r.policy, source: `${src.runtimeFile} (bastion policy add)` })),
        ],
        rules: m.ruleList(),
      },
    });
  });
}
