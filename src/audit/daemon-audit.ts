/**
 * The audit as the daemon runs it (GET /v1/audit, `bastion status`): over
 * its own state (endpoints, stacks, unprotected containers, the rules it
 * enforces, Compose's included) rather than over its API, with the last
 * report kept so that a status request never waits for a Docker scan.
 */
import type { AuditReport, Finding, Severity } from './findings.js';

/** Runs the audit at most once at a time and keeps the last report. */
export class AuditCache {
  private last?: AuditReport;
  private running?: Promise<AuditReport>;

  constructor(private readonly run: () => Promise<AuditReport>) {}

  /** The last report, however old (undefined before the first run). */
  peek(): AuditReport | undefined {
    return this.last;
  }

  /** A report at most maxAgeMs old: the last one, or a new run (shared by concurrent callers). */
  async get(maxAgeMs: number, now = Date.now()): Promise<AuditReport> {
    if (this.last && now - Date.parse(this.last.generatedAt) <= maxAgeMs) return this.last;
    this.running ??= this.run()
      .then((r) => (this.last = r))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  /** Starts a run in the background when the last report is older than maxAgeMs; errors are the caller's to log. */
  refreshIfStale(maxAgeMs: number, onError: (err: Error) => void): void {
    void this.get(maxAgeMs).catch(onError);
  }
}

/** What `bastion status` shows of the audit: the counts, and each container's findings. */
export interface StatusAudit {
  generatedAt: string;
  summary: Record<Severity, number>;
  /** findings about containers, by container id (12 hex digits) */
  containers: Record<string, Array<Pick<Finding, 'id' | 'severity' | 'title'>>>;
  /** findings about anything else (the engine, the daemon, policies) */
  other: Array<Pick<Finding, 'id' | 'severity' | 'title' | 'object'>>;
}

export function statusAudit(r: AuditReport): StatusAudit {
  const containers: StatusAudit['containers'] = {};
  const other: StatusAudit['other'] = [];
  for (const f of r.findings) {
    const brief = { id: f.id, severity: f.severity, title: f.title };
    if (f.object.kind === 'container' && f.object.id) (containers[f.object.id] ??= []).push(brief);
    else other.push({ ...brief, object: f.object });
  }
  return { generatedAt: r.generatedAt, summary: r.summary, containers, other };
}

/** The findings of the container behind an endpoint key ("docker:<id12>/<network>"). */
export function findingsOfEndpoint(a: StatusAudit, key: string): StatusAudit['containers'][string] {
  const m = /^docker:([0-9a-f]{12})/.exec(key);
  return m ? (a.containers[m[1]!] ?? []) : [];
}
