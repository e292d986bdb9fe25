/**
 * The config file as the daemon applies it: read and validated whole (plus
 * a Compose file's policy), its containers discovered, then applied to the
 * manager as a difference; or rejected whole, with what was applied before
 * still in force. Start-up is the first apply; a reload (file change,
 * SIGHUP, POST /v1/reload) is every later one.
 */
import type { Logger } from 'pino';
import pLimit from 'p-limit';
import type { Manager } from '../manager/manager.js';
import type { EndpointSpec } from '../manager/endpoint.js';
import type { Discovered, NodePort } from '../manager/ports.js';
import type { PolicySet, Rule } from '../policy/model.js';
import { loadConfigSource, type LoadedConfig } from './config-source.js';
import type { RuntimePolicies } from './runtime-policies.js';
import { releaseMemory } from './memory.js';
import { NetnsPermissionDenied } from '../agent/netns.js';
import { formatIssue } from '../policy/errors.js';
import { fail, succeed, type Outcome, type ReloadResult } from '../api/types.js';

/** Discoveries in flight at once (each runs one `ip` in a container's namespace). */
const DISCOVERY_CONCURRENCY = 8;

/** A config that does not validate (or names a container that cannot be found): nothing of it is applied. */
export class ConfigRejected extends Error {
  constructor(readonly errors: string[]) {
    super(errors.join('\n'));
  }
}

/**
 * The config is valid but the daemon may not reach some of its containers
 * (their namespaces cannot be opened with its privileges): nothing of it
 * is applied, and it is not the config's fault.
 */
export class CannotProtect extends Error {
  constructor(readonly errors: string[]) {
    super(errors.join('\n'));
    this.name = 'CannotProtect';
  }
}

export interface ConfigReloaderOptions {
  configPath?: string;
  /** a platform reports the containers: the file gives policies only */
  platform: boolean;
  /** policy from elsewhere (a Compose file), added to the file's */
  extraPolicy?: () => Promise<PolicySet | undefined>;
  /** largest config file accepted */
  maxConfigBytes?: number;
  /** rules a platform holds (published ports): in force next to the file's, whatever the file says */
  platformRules?: () => Rule[];
  node: NodePort;
  /** the runtime policies: applied after the file's, and their names are not the file's to take */
  runtime: RuntimePolicies;
  /** cluster mode: the policies are the cluster's (these rules, instead of the runtime ones), and the file may not have any */
  clusterRules?: () => Rule[];
  log: Logger;
}

/** A config validated and its containers discovered, not applied yet. */
export interface PreparedConfig {
  config: LoadedConfig;
  found: Map<string, Discovered>;
}

export class ConfigReloader {
  private manager?: Manager;
  private current?: LoadedConfig;
  private closing = false;

  constructor(private readonly o: ConfigReloaderOptions) {}

  get configPath(): string | undefined {
    return this.o.configPath;
  }

  /** The config in force (undefined before start-up applied one). */
  get config(): LoadedConfig | undefined {
    return this.current;
  }

  private readDigest?: string;

  /**
   * The digest (configDigest) of the file text the last load read, whether
   * it was applied or rejected: that content has been judged, and the config
   * watch need not hand it over again. Undefined while a load is reading
   * (what it reads is not known yet: the watch then hands any content over,
   * and the reload it asks for runs after this one and reads the file again)
   * and after a load that read nothing.
   */
  get lastReadDigest(): string | undefined {
    return this.readDigest;
  }

  /** Start-up: apply a prepared config (and the runtime policies) to a new manager. */
  async applyFirst(manager: Manager, first: PreparedConfig): Promise<void> {
    this.manager = manager;
    await manager.setPolicy(this.withRuntime(first.config.policy));
    await manager.upsertEndpoints(first.config.containers.map((spec) => ({ spec, known: first.found.get(spec.key)! })));
    this.current = withoutRules(first.config);
  }

  /** Names that are both a config-file policy and a runtime policy. */
  clashes(config: LoadedConfig): string[] {
    return config.policies.map((p) => p.name).filter((n) => this.o.runtime.get(n));
  }

  /** Containers a reload took out of protection since start-up (a metric). */
  containersRemoved = 0;
  private running?: Promise<Outcome<ReloadResult>>;
  private waiting?: Promise<Outcome<ReloadResult>>;

  /**
   * Re-read the config; apply the difference, or reject it whole. Reloads
   * run one at a time, in order (the parse runs in a worker and takes
   * seconds for a large file: an older load must never finish after a
   * newer one and apply a stale file); requests made while one runs are
   * served by the one next reload.
   */
  reload(): Promise<Outcome<ReloadResult>> {
    if (this.waiting) return this.waiting;
    const prev = this.running;
    const mine: Promise<Outcome<ReloadResult>> = (prev ?? Promise.resolve())
      .then(() => {
        if (this.waiting === mine) this.waiting = undefined;
        return this.reloadOnce();
      })
      .finally(() => {
        if (this.running === mine) this.running = undefined;
      });
    this.running = mine;
    if (prev) this.waiting = mine;
    return mine;
  }

  private async reloadOnce(): Promise<Outcome<ReloadResult>> {
    const manager = this.manager;
    if (this.closing || !manager) return fail('stopping', ['daemon is stopping']);
    try {
      const next = await this.load();
      // Containers whose entry did not change are not looked at again:
      // a reload costs what changed, not the number of containers.
      const before = new Map((this.current?.containers ?? []).map((c) => [c.key, JSON.stringify(c)]));
      const changed = this.o.platform
        ? []
        : next.containers.filter((c) => !manager.endpoints.has(c.key) || before.get(c.key) !== JSON.stringify(c));
      const found = await this.discover(changed, next.containers);
      const clash = this.clashes(next);
      if (clash.length) {
        throw new ConfigRejected(
          clash.map((n) => `${this.o.configPath}: policy "${n}" is also a runtime policy (bastion policy add); delete one of them first (bastion policy delete ${n})`),
        );
      }
      const t0 = performance.now();
      // Taking a container out of protection is said, by name: a file that lost a
      // container by mistake (an edit gone wrong) must not go unnoticed.
      const kept = new Set(next.containers.map((c) => c.key));
      const removed = this.o.platform ? [] : (this.current?.containers ?? []).filter((c) => !kept.has(c.key));
      if (removed.length) {
        this.containersRemoved += removed.length;
        this.o.log.warn({ containers: removed.map((c) => c.name) }, `the new config takes ${removed.length} container${removed.length === 1 ? '' : 's'} out of protection`);
      }
      await manager.setPolicy(this.withRuntime(next.policy));
      if (!this.o.platform) {
        await manager.retainOnly(new Set(next.containers.map((c) => c.key)));
        await manager.upsertEndpoints(changed.map((spec) => ({ spec, known: found.get(spec.key)! })));
      }
      this.current = withoutRules(next);
      // A reload is also the operator's way to say "look again": maps and
      // stacks are read back and repaired, and containers whose interface
      // vanished (a namespace deleted and created again) are found again.
      const check = await manager.verify('reload');
      if (check.stacks.rediscovered.length) this.o.log.info({ containers: check.stacks.rediscovered }, 'containers found again on new interfaces');
      this.fileNames(); // the new file's names, before an API request needs them
      const ms = +(performance.now() - t0).toFixed(2);
      // a reload re-reads the whole file: its parse is the garbage of a peak
      const memory = await releaseMemory();
      this.o.log.info({ rules: next.policy.rules.length, endpoints: manager.endpoints.size, ms, rssMb: memory.rssMb }, 'config applied');
      return succeed({});
    } catch (err) {
      const errors = err instanceof ConfigRejected || err instanceof CannotProtect ? err.errors : [(err as Error).message];
      this.o.log.error({ errors }, 'config rejected, previous config stays in force');
      for (const e of errors) process.stderr.write(`bastion: ${e}\n`);
      // a config that does not validate is invalid input; anything else failed while applying it
      return fail(err instanceof ConfigRejected ? 'invalid' : 'failed', errors);
    }
  }

  /** No reload starts after this. */
  close(): void {
    this.closing = true;
  }

  /** The config file's policy names, computed once per loaded config (50,000 at 5,000 containers). */
  fileNames(): Set<string> {
    const c = this.current;
    if (!c) return new Set();
    let names = this.fileNamesCache.get(c);
    if (!names) this.fileNamesCache.set(c, (names = new Set(c.policies.map((p) => p.name))));
    return names;
  }
  private readonly fileNamesCache = new WeakMap<LoadedConfig, Set<string>>();

  /** The config's rules, then the runtime policies' (in the order they were added); in cluster mode, the cluster's. */
  private withRuntime(policy: PolicySet): PolicySet {
    const more = this.o.clusterRules ? this.o.clusterRules() : this.o.runtime.rules();
    return { mode: policy.mode, rules: [...policy.rules, ...more, ...(this.o.platformRules?.() ?? [])] };
  }

  /** Read and validate the config whole (throws ConfigRejected); applies nothing. */
  async load(): Promise<LoadedConfig> {
    this.readDigest = undefined;
    const loaded = await loadConfigSource(this.o.configPath, { containersRequired: !this.o.platform, ...(this.o.maxConfigBytes ? { maxBytes: this.o.maxConfigBytes } : {}) });
    this.readDigest = loaded.digest;
    if (!loaded.ok) throw new ConfigRejected(loaded.errors);
    if (this.o.clusterRules && loaded.policies.length) {
      throw new ConfigRejected([
        `${this.o.configPath}: policies: in cluster mode the policies are the cluster's; remove this section and add them with "bastion policy add --cluster ..."`,
      ]);
    }
    if (this.o.extraPolicy) {
      const extra = await this.o.extraPolicy();
      if (extra) loaded.policy = { mode: loaded.policy.mode, rules: [...loaded.policy.rules, ...extra.rules] };
    }
    return loaded;
  }

  /**
   * Discover containers, a few at a time (each is one `ip` process in the
   * container's namespace); any failure rejects the whole config (throws
   * ConfigRejected).
   */
  async discover(specs: EndpointSpec[], listed: EndpointSpec[] = specs): Promise<Map<string, Discovered>> {
    const errors: string[] = [];
    const denied: string[] = [];
    const found = new Map<string, Discovered>();
    const limit = pLimit(DISCOVERY_CONCURRENCY);
    // errors name the container by its place in the file
    const index = new Map(listed.map((c, i) => [c.key, i]));
    await Promise.all(
      specs.map((s, i) =>
        limit(async () => {
          try {
            found.set(s.key, await this.o.node.discover(s));
          } catch (err) {
            const line = formatIssue({
              code: 'invalid-value',
              file: this.o.configPath ?? 'config',
              path: ['containers', index.get(s.key) ?? i, 'netns'],
              object: { name: s.name, at: 2 },
              message: (err as Error).message,
            });
            (err instanceof NetnsPermissionDenied ? denied : errors).push(line);
          }
        }),
      ),
    );
    if (errors.length) throw new ConfigRejected([...errors, ...denied].sort());
    if (denied.length) throw new CannotProtect(denied.sort());
    return found;
  }
}

/**
 * The config in force as it is kept: without its rule list, which only
 * applying it needs. The manager's compiler holds the rules' parts, not the
 * Rule objects (Manager.rules() puts them together again): kept here, the
 * list would keep its 100,000 Rule objects at 5,000 containers alive, 6.4 MB.
 */
function withoutRules(c: LoadedConfig): LoadedConfig {
  return { ...c, policy: { mode: c.policy.mode, rules: [] } };
}
