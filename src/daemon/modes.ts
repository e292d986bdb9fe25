/**
 * Audit per workload: which containers run in audit mode (their stacks let
 * through what they would drop, and report it as AUDIT) and why.
 *
 * A container's mode, first rule that applies:
 * 1. the host's mode (the config file's `mode`): audit puts every container
 *    in audit mode (the datapath's global switch; nothing can be enforced
 *    under it);
 * 2. a mode set at run time (`bastion mode audit web`, PUT
 *    /v1/containers/web/mode), kept in /run/bastion/<pin-dir>.modes.json
 *    across daemon restarts, forgotten by `bastion down`;
 * 3. the container's own `mode` in the config file;
 * 4. a policy with `mode: audit` (in the config file, or a runtime policy)
 *    that selects the container at either end;
 * 5. otherwise enforce.
 *
 * The manager asks modeOf() whenever it writes an endpoint's entry; after a
 * change here (or of the policies), refresh() rewrites the entries of the
 * endpoints whose mode moved.
 */
import { readFileSync } from 'node:fs';
import { writeFileDurably } from './durable-file.js';
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { Endpoint } from '../manager/endpoint.js';
import type { LabelSelector, Mode } from '../policy/model.js';
import type { PolicyConfig } from '../policy/bastion-config.js';
import { matches } from '../policy/selector.js';
import { fail, succeed, type ModeChange, type ModeInfo, type ModesAnswer, type Outcome } from '../api/types.js';

/** Where the policies come from: the config file's and the runtime ones, and the host's mode. */
export interface ModeSources {
  globalMode(): Mode;
  filePolicies(): readonly PolicyConfig[];
  runtimePolicies(): readonly PolicyConfig[];
}

interface AuditPolicy {
  name: string;
  source: 'config' | 'runtime';
  selectors: LabelSelector[];
}

function auditPolicies(list: readonly PolicyConfig[], source: AuditPolicy['source']): AuditPolicy[] {
  const out: AuditPolicy[] = [];
  for (const p of list) {
    if (p.mode !== 'audit') continue;
    const selectors = [p.from, p.to].flatMap((e) => (e.kind === 'endpoints' ? [e.selector] : []));
    out.push({ name: p.name, source, selectors });
  }
  return out;
}

export class ModeService {
  private readonly overrides = new Map<string, Mode>();
  private policies: AuditPolicy[] = [];
  /** what the entries were last written with, by endpoint key */
  private readonly applied = new Map<string, Mode>();
  private manager?: Manager;

  constructor(
    private readonly file: string,
    private readonly sources: ModeSources,
    private readonly log: Logger,
  ) {}

  /** Start-up: the modes a previous run set. A file that cannot be read is said and not used. */
  load(): void {
    this.reindex();
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch {
      return;
    }
    try {
      const raw = JSON.parse(text) as { modes?: Record<string, unknown> };
      for (const [name, mode] of Object.entries(raw.modes ?? {})) {
        if (mode === 'audit' || mode === 'enforce') this.overrides.set(name, mode);
        else this.log.error({ file: this.file, container: name, mode }, 'saved mode not used: expected audit or enforce');
      }
      if (this.overrides.size) this.log.info({ modes: Object.fromEntries(this.overrides) }, 'modes set at run time by the previous run restored');
    } catch (err) {
      this.log.error({ file: this.file, err: (err as Error).message }, 'saved modes not used: not JSON');
    }
  }

  attach(manager: Manager): void {
    this.manager = manager;
  }

  /**
   * The policies changed (a reload, a runtime policy): find the audit ones
   * again. The config file's list is scanned once per loaded file (50,000
   * policies at 5,000 containers in the benchmark), not at every runtime
   * policy added. Says whether the audit policies are other than before.
   */
  private reindex(): boolean {
    const file = this.sources.filePolicies();
    let fromFile = this.fileAudit.get(file);
    if (!fromFile) this.fileAudit.set(file, (fromFile = auditPolicies(file, 'config')));
    const next = [...fromFile, ...auditPolicies(this.sources.runtimePolicies(), 'runtime')];
    const signature = JSON.stringify(next);
    const changed = signature !== this.signature;
    this.policies = next;
    this.signature = signature;
    return changed;
  }
  private readonly fileAudit = new WeakMap<readonly PolicyConfig[], AuditPolicy[]>();
  private signature = '';

  /** A container's mode and where it comes from. */
  resolve(ep: Pick<Endpoint, 'name' | 'labels' | 'mode'>): ModeInfo {
    if (this.sources.globalMode() === 'audit') return { mode: 'audit', source: 'default' };
    const o = this.overrides.get(ep.name);
    if (o) return { mode: o, source: 'runtime' };
    if (ep.mode) return { mode: ep.mode, source: 'config' };
    const p = this.policies.find((x) => x.selectors.some((s) => matches(s, ep.labels)));
    if (p) return { mode: 'audit', source: p.source, policy: p.name };
    return { mode: 'enforce', source: 'default' };
  }

  /** For the manager (ManagerOptions.modeOf). */
  readonly modeOf = (ep: Endpoint): Mode => {
    const m = this.resolve(ep).mode;
    this.applied.set(ep.key, m);
    return m;
  };

  /**
   * Rewrite the entries of endpoints whose mode moved (after a policy
   * change, a reload, a mode set). `policiesOnly`: only runtime policies
   * changed (added, replaced, deleted); if the audit ones are the same as
   * before, no mode can have moved and the endpoints are not walked (this
   * runs after every `POST /v1/policies`, and walking 5,000 endpoints took
   * the event loop for milliseconds each time).
   */
  async refresh(opts: { policiesOnly?: boolean } = {}): Promise<string[]> {
    const m = this.manager;
    if (!m) return [];
    const auditChanged = this.reindex();
    if (opts.policiesOnly && !auditChanged) return [];
    const moved: string[] = [];
    for (const ep of m.endpoints.values()) {
      if (this.applied.get(ep.key) !== this.resolve(ep).mode) moved.push(ep.key);
    }
    for (const k of this.applied.keys()) if (!m.endpoints.has(k)) this.applied.delete(k);
    if (moved.length) {
      await m.refreshModes(moved);
      this.log.info({ endpoints: moved.map((k) => m.endpoints.get(k)?.name ?? k), modes: moved.map((k) => this.applied.get(k)) }, 'modes changed');
    }
    return moved;
  }

  /** GET /v1/modes */
  list(): ModesAnswer {
    const eps = [...(this.manager?.endpoints.values() ?? [])].sort((a, b) => a.name.localeCompare(b.name));
    return { global: this.sources.globalMode(), containers: eps.map((ep) => ({ name: ep.name, ...this.resolve(ep) })) };
  }

  /** The endpoints a name means: the container itself, or each of its interfaces ("name/network"). */
  private endpointsNamed(name: string): Endpoint[] {
    const eps = [...(this.manager?.endpoints.values() ?? [])];
    const exact = eps.filter((e) => e.name === name);
    return exact.length ? exact : eps.filter((e) => e.name.startsWith(`${name}/`));
  }

  /** PUT /v1/containers/:name/mode: set a container's mode at run time, kept across restarts. */
  async set(name: string, mode: unknown): Promise<Outcome<ModeChange>> {
    if (mode !== 'audit' && mode !== 'enforce') return fail('invalid', [`mode: expected "audit" or "enforce", got ${JSON.stringify(mode)}`]);
    if (!this.manager) return fail('stopping', ['daemon is not ready']);
    const eps = this.endpointsNamed(name);
    if (eps.length === 0) return fail('not-found', [`no container "${name}" is protected by this daemon (bastion status lists them)`]);
    if (mode === 'enforce' && this.sources.globalMode() === 'audit') {
      return fail('conflict', [`the whole host is in audit mode (mode: audit in the config file): no container can be enforced under it; set mode: enforce there, then per container`]);
    }
    for (const ep of eps) this.overrides.set(ep.name, mode);
    const saved = this.save();
    await this.refresh();
    await saved;
    return succeed({ name, mode });
  }

  /** Never throws: in force already, a failed save is logged. */
  private async save(): Promise<void> {
    try {
      await writeFileDurably(this.file, JSON.stringify({ modes: Object.fromEntries([...this.overrides].sort()) }) + '\n');
    } catch (err) {
      // in force already; only a restart would forget it
      this.log.error({ file: this.file, err: (err as Error).message }, 'could not save the modes set at run time');
    }
  }
}
