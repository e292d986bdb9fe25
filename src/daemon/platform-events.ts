/**
 * A platform's events (Docker: containers started and stopped, veths that
 * appear before their container runs) turned into manager changes. A failed
 * event is logged; the platform's next resync ('synced') repairs the map.
 */
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { PlatformEvent } from '../manager/endpoint.js';
import type { Mode } from '../policy/model.js';
import type { PublishedPortPolicies } from './published-ports.js';

/**
 * `published` (when given) turns an endpoint's published ports into its
 * policies: they are in force before the endpoint is (a published port
 * answers from the container's first moment) and leave after it.
 */
export function platformEventHandler(
  manager: Manager,
  log: Logger,
  defaultMode: () => Mode | undefined,
  published?: PublishedPortPolicies,
): (ev: PlatformEvent) => Promise<void> {
  const changePublished = async (ch: { added: Parameters<Manager['changeRules']>[0]; removed: Parameters<Manager['changeRules']>[1] }) => {
    if (ch.added.length || ch.removed.length) await manager.changeRules(ch.added, ch.removed);
  };
  return async (ev) => {
    try {
      switch (ev.type) {
        case 'upsert':
          if (published) await changePublished(published.set(ev.spec));
          await manager.upsertEndpoint({ ...ev.spec, mode: ev.spec.mode ?? defaultMode() });
          break;
        case 'remove':
          await manager.removeEndpoint(ev.key);
          if (published) await changePublished({ added: [], removed: published.delete(ev.key) });
          break;
        case 'unprotected':
          manager.setUnprotected(ev.container);
          log.warn({ container: ev.container.name, reason: ev.container.reason }, 'container cannot be protected');
          break;
        case 'unprotected-gone':
          manager.clearUnprotected(ev.key);
          break;
        case 'port-guard':
          await manager.guardPort(ev.hostIfindex);
          break;
        case 'port-release':
          await manager.releasePort(ev.hostIfindex);
          break;
        case 'synced': {
          const keys = new Set(ev.keys);
          await manager.retainOnly(keys);
          if (published) for (const k of published.keys()) if (!keys.has(k)) await changePublished({ added: [], removed: published.delete(k) });
          break;
        }
      }
    } catch (err) {
      log.error({ err: (err as Error).message, event: ev.type }, 'platform event failed');
    }
  };
}
