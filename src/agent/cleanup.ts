/**
 * `bastion down` and the daemon-less half of `bastion status`: what is
 * pinned under a pin path, and removing all of it.
 *
 * Which interfaces carry our stacks is recorded in the datapath itself: the
 * agent writes a bastion_ep_stat entry for an interface before it attaches
 * there, so the keys of that map are every interface we may have touched,
 * including ones whose endpoint entry was never written. Only this
 * instance's stacks are counted or detached: those whose programs use this
 * pin path's maps (stack.ts); another instance's stack on an interface
 * recorded here (it took the interface over, or never gave it back) is left
 * alone.
 */
import { existsSync } from 'node:fs';
import { openBastionMaps } from '../datapath/bpf-map.js';
import { removePinDir, listPins } from '../datapath/bpffs.js';
import { Ownership, detachStack, stackState } from './stack.js';

export interface PinReport {
  present: boolean;
  pins: string[];
  endpoints: number;
  stacks: number;
}

export function inspectPins(pinPath: string): PinReport {
  if (!existsSync(pinPath)) return { present: false, pins: [], endpoints: 0, stacks: 0 };
  const pins = listPins(pinPath);
  try {
    const maps = openBastionMaps(pinPath);
    try {
      const ifindexes = [...maps.epStats.raw.keys()].map((k) => k.readUInt32LE(0));
      const who = new Ownership(maps.endpoints.raw.id);
      const ours = (i: number) => {
        const s = stackState(i, who);
        // without a daemon, no program is "self": a stack of this instance is one that uses its maps
        return !s.gone && (s.owner === 'earlier' || s.owner === 'self');
      };
      return {
        present: true,
        pins,
        endpoints: [...maps.endpoints.raw.keys()].length,
        stacks: ifindexes.filter(ours).length,
      };
    } finally {
      maps.close();
    }
  } catch {
    return { present: pins.length > 0, pins, endpoints: 0, stacks: 0 };
  }
}

export interface DownReport {
  detached: number[];
  pinsRemoved: string[];
}

/** Detach every stack recorded under pinPath, then remove the pins. */
export function tearDown(pinPath: string): DownReport {
  const detached: number[] = [];
  if (!existsSync(pinPath)) return { detached, pinsRemoved: [] };
  const pins = listPins(pinPath);
  try {
    const maps = openBastionMaps(pinPath);
    try {
      const ifindexes = new Set<number>();
      for (const k of maps.epStats.raw.keys()) ifindexes.add(k.readUInt32LE(0));
      for (const k of maps.endpoints.raw.keys()) ifindexes.add(k.readUInt32LE(0));
      const who = new Ownership(maps.endpoints.raw.id);
      for (const ifindex of ifindexes) {
        if (detachStack(ifindex, who)) detached.push(ifindex);
      }
    } finally {
      maps.close();
    }
  } catch {
    // maps missing or from another version: still remove the pins below
  }
  removePinDir(pinPath);
  return { detached, pinsRemoved: pins };
}
