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
import { join } from 'node:path';
import { BpfMap } from '../datapath/bpf-map.js';
import { MAP_NAMES } from '../datapath/layout.js';
import { checkPinPath, removePinDir, listPins } from '../datapath/bpffs.js';
import { Ownership, detachStack, isOurs, stackState } from './stack.js';
import { detachTunnelProgram, detachUnderlayProgram, tunnelProgramOwner } from './tunnel.js';
import { execFileSync } from 'node:child_process';

/**
 * The interfaces recorded under pinPath (bastion_ep_stat and bastion_ep
 * keys, both an ifindex) and how many endpoints there are. Only these two
 * maps are opened, raw: `down` must work on the pins of another version
 * whose other maps have other layouts.
 */
function recorded(pinPath: string): { ifindexes: Set<number>; endpoints: number; who: Ownership } {
  const ifindexes = new Set<number>();
  let endpoints = 0;
  let endpointMapId = 0;
  for (const name of [MAP_NAMES.epStats, MAP_NAMES.endpoints]) {
    const m = BpfMap.openPinned(join(pinPath, name));
    try {
      for (const k of m.keys()) {
        ifindexes.add(k.readUInt32LE(0));
        if (name === MAP_NAMES.endpoints) endpoints++;
      }
      if (name === MAP_NAMES.endpoints) endpointMapId = m.id;
    } finally {
      m.close();
    }
  }
  // without a daemon no program is "self": this instance's stacks are those that use its bastion_ep
  // (and its from_overlay, on a cluster node's tunnel device, the one that uses its bastion_ep_ip)
  return { ifindexes, endpoints, who: new Ownership([endpointMapId, mapId(pinPath, MAP_NAMES.endpointsByIp)]) };
}

/** The id of a pinned map (0 when it is not there), opened raw. */
function mapId(pinPath: string, name: string): number {
  try {
    const m = BpfMap.openPinned(join(pinPath, name));
    try {
      return m.id;
    } finally {
      m.close();
    }
  } catch {
    return 0;
  }
}

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
    const r = recorded(pinPath);
    const ours = (i: number) => {
      const s = stackState(i, r.who);
      return !s.gone && isOurs(s.owner);
    };
    return { present: true, pins, endpoints: r.endpoints, stacks: [...r.ifindexes].filter(ours).length };
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

/**
 * Detach every stack recorded under pinPath, then remove the pins. A pin
 * path checkPinPath refuses (a symlink, another user's directory) is left
 * alone, maps and all: its maps are not ours to read, and following it
 * would detach and unpin another instance's datapath.
 */
export function tearDown(pinPath: string): DownReport {
  const detached: number[] = [];
  let tunnel: string | undefined;
  if (!checkPinPath(pinPath).exists) return { detached, pinsRemoved: [] };
  const pins = listPins(pinPath);
  let who: Ownership | undefined;
  try {
    const r = recorded(pinPath);
    who = r.who;
    for (const ifindex of r.ifindexes) {
      if (detachStack(ifindex, r.who)) detached.push(ifindex);
    }
  } catch {
    // maps missing: still remove the pins below
  }
  // the tunnel (cluster mode): its map raw too, it may be another version's
  try {
    const m = BpfMap.openPinned(join(pinPath, MAP_NAMES.tunnel));
    try {
      const v = m.lookup(Buffer.alloc(4));
      const ifindex = v && v.length >= 4 ? v.readUInt32LE(0) : 0;
      // from_underlay first: it reads the maps about to go, on the host's own interface
      const underlay = v && v.length >= 12 ? v.readUInt32LE(8) : 0;
      if (underlay && who) detachUnderlayProgram(underlay, who);
      if (ifindex && who) tunnel = removeTunnel(ifindex, who);
    } finally {
      m.close();
    }
  } catch {
    // no tunnel map: not a cluster node
  }
  removePinDir(pinPath);
  return { detached, pinsRemoved: pins, ...(tunnel ? { tunnel } : {}) };
}

/**
 * The tunnel program off, and the VXLAN device away (only if it is one: an
 * ifindex may have been reused). A device that carries another instance's
 * from_overlay is that instance's tunnel now: left alone, program and all.
 */
function removeTunnel(ifindex: number, who: Ownership): string | undefined {
  if (tunnelProgramOwner(ifindex, who)?.owner === 'foreign') return undefined;
  detachTunnelProgram(ifindex, who);
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
