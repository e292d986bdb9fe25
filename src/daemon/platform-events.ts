/**
 * A platform's events (Docker: containers started and stopped, veths that
 * appear before their container runs) turned into manager changes. A failed
 * event is logged; the platform's next resync ('synced') repairs the map.
 */
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { PlatformEvent } from '../manager/endpoint.js';
import type { Mode } from '../policy/model.js';

export function platformEventHandler(manager: Manager, log: Logger, defaultMode: () => Mode | undefined): (ev: PlatformEvent) => Promise<void> {
  return async (ev) => {
    try {
      switch (ev.type) {
        case 'upsert':
          await manager.upsertEndpoint({ ...ev.spec, mode: ev.spec.mode ?? defaultMode() });
          break;
        case 'remove':
          await manager.removeEndpoint(ev.key);
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
        case 'synced':
          await manager.retainOnly(new Set(ev.keys));
          break;
      }
    } catch (err) {
      log.error({ err: (err as Error).message, event: ev.type }, 'platform event failed');
    }
  };
}
