/**
 * The periodic drift check: the manager reads every managed map and stack
 * back, repairs what differs and finds again containers whose interface
 * vanished (Manager.verify; what it costs is in src/manager/reconciler.ts).
 *
 * Checks run one after another: the next starts `intervalMs` after the last
 * ended, or later: at least 20 times as long as the last check took, so
 * that checking costs at most about 5 % of a core whatever the number of
 * containers (at 5,000 containers, 220,000 entries, a check reads for a few
 * hundred milliseconds; with a handful, a few milliseconds).
 */
import type { Logger } from 'pino';
import type { Manager, VerifyReport } from '../manager/manager.js';

/** Default interval between drift checks. */
export const DEFAULT_VERIFY_INTERVAL_MS = 5000;
/** A check is followed by a pause of at least this many times its duration. */
const PAUSE_FACTOR = 20;

export class DriftWatch {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  last?: VerifyReport;

  constructor(
    private readonly manager: Manager,
    readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.intervalMs > 0) this.schedule(this.intervalMs);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const t0 = performance.now();
    try {
      this.note(await this.manager.verify('periodic'));
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'drift check failed');
    }
    const took = performance.now() - t0;
    this.schedule(Math.max(this.intervalMs, PAUSE_FACTOR * took));
  }

  /** Record a check (periodic or on request) and say what it found. */
  note(r: VerifyReport): VerifyReport {
    this.last = r;
    const s = r.stacks;
    const found = r.maps.repaired + s.reattached + s.rediscovered.length;
    const fields = { reason: r.reason, ms: r.ms, repaired: r.maps.repaired, reattached: s.reattached, rediscovered: s.rediscovered, foreign: s.foreign.length, lost: s.lost };
    if (found || !r.clean) this.log.warn(fields, r.clean ? 'drift check: differences repaired' : 'drift check: protection not fully in place');
    else this.log.debug(fields, 'drift check: in sync');
    return r;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}
