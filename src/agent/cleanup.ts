/**
 * `bastion down` and the daemon-less half of `bastion status`: what is
 * pinned under a pin path, and removing all of it.
 *
 * Which interfaces carry our stacks is recorded in the datapath itself: the
 * agent writes a bastion_ep_stat entry for an interface before it attaches
 * there, so the keys of that map are every interface we may have touched,
 * including ones whose endpoint entry was never written.
 */
import { openBastionMaps } from '../datapath/bpf-map.js';
import { checkPinPath, removePinDir, listPins } from '../datapath/bpffs.js';
import { detachStack, stackState } from './stack.js';

export interface PinReport {
  present: boolean;
  /** why the pin path was not looked into (a symlink, another user's directory) */
  refused?: string;
  pins: string[];
  endpoints: number;
  stacks: number;
}

export function inspectPins(pinPath: string): PinReport {
  try {
    if (!checkPinPath(pinPath).exists) return { present: false, pins: [], endpoints: 0, stacks: 0 };
  } catch (err) {
    return { present: false, refused: (err as Error).message, pins: [], endpoints: 0, stacks: 0 };
  }
  const pins = listPins(pinPath);
  try {
    const maps = openBastionMaps(pinPath);
    try {
      const ifindexes = [...maps.epStats.raw.keys()].map((k) => k.readUInt32LE(0));
      return {
        present: true,
        pins,
        endpoints: [...maps.endpoints.raw.keys()].length,
        stacks: ifindexes.filter((i) => stackState(i).ok).length,
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

/**
 * Detach every stack recorded under pinPath, then remove the pins. A pin
 * path checkPinPath refuses (a symlink, another user's directory) is left
 * alone, maps and all: its maps are not ours to read, and following it
 * would detach and unpin another instance's datapath.
 */
export function tearDown(pinPath: string): DownReport {
  const detached: number[] = [];
  if (!checkPinPath(pinPath).exists) return { detached, pinsRemoved: [] };
  const pins = listPins(pinPath);
  try {
    const maps = openBastionMaps(pinPath);
    try {
      const ifindexes = new Set<number>();
      for (const k of maps.epStats.raw.keys()) ifindexes.add(k.readUInt32LE(0));
      for (const k of maps.endpoints.raw.keys()) ifindexes.add(k.readUInt32LE(0));
      for (const ifindex of ifindexes) {
        if (detachStack(ifindex)) detached.push(ifindex);
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
