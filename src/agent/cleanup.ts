/**
 * `bastion down` and the daemon-less half of `bastion status`: what is
 * pinned under a pin path, and removing all of it.
 *
 * Which interfaces carry our stacks is recorded in the datapath itself: the
 * agent writes a bastion_ep_stat entry for an interface before it attaches
 * there, so the keys of that map are every interface we may have touched,
 * including ones whose endpoint entry was never written.
 */
import { existsSync } from 'node:fs';
import { openBastionMaps } from '../datapath/bpf-map.js';
import { removePinDir, listPins } from '../datapath/bpffs.js';
import { detachStack, stackState } from './stack.js';
import { detachTunnelProgram } from './tunnel.js';
import { execFileSync } from 'node:child_process';

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
  /** the VXLAN device removed (cluster mode) */
  tunnel?: string;
}

/** Detach every stack recorded under pinPath, then remove the pins. */
export function tearDown(pinPath: string): DownReport {
  const detached: number[] = [];
  let tunnel: string | undefined;
  if (!existsSync(pinPath)) return { detached, pinsRemoved: [] };
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
      const t = maps.tunnel.get();
      if (t.ifindex) tunnel = removeTunnel(t.ifindex);
    } finally {
      maps.close();
    }
  } catch {
    // maps missing or from another version: still remove the pins below
  }
  removePinDir(pinPath);
  return { detached, pinsRemoved: pins, ...(tunnel ? { tunnel } : {}) };
}

/** The tunnel program off, and the VXLAN device away (only if it is one: an ifindex may have been reused). */
function removeTunnel(ifindex: number): string | undefined {
  detachTunnelProgram(ifindex);
  try {
    const links = JSON.parse(execFileSync('ip', ['-d', '-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifindex: number; ifname: string; linkinfo?: { info_kind?: string } }>;
    const l = links.find((x) => x.ifindex === ifindex);
    if (!l || l.linkinfo?.info_kind !== 'vxlan') return undefined;
    execFileSync('ip', ['link', 'del', l.ifname], { stdio: 'ignore' });
    return l.ifname;
  } catch {
    return undefined;
  }
}
