/**
 * A container's stack on its host-side veth: from_container on tc ingress
 * (what the container sends), to_container on tc egress (what it receives).
 * Both use a fixed handle and priority, so attaching again replaces in one
 * step and never stacks a second copy.
 *
 * Whose stack is it? Every Bastion instance attaches at the same handle and
 * priority, so the slot alone cannot tell; the program's name cannot either
 * (every instance loads from_container and to_container). What tells them
 * apart is what a program enforces: the maps it reads. An instance is its
 * pin path, and its pinned maps are its alone (two daemons on one pin path
 * are one instance, which the instance lock prevents), so:
 *
 *   a program whose map ids include this instance's bastion_ep map (or its
 *   bastion_ep_ip: from_overlay on a cluster node's tunnel device reads
 *   only that one) is this instance's: the one loaded now (its program ids), or one a previous run
 *   attached (same pinned maps, older program), which a restart replaces;
 *   a Bastion program (by name) that uses other maps is another instance's:
 *   never guarded over, replaced or detached (ForeignStackError);
 *   anything else in Bastion's slot is not a stack at all.
 *
 * The map ids are the kernel's own account (bpf_prog_info), so nothing a
 * program or another tool writes can make a stack look like another's. Each
 * instance also binds a one-entry map holding its pin path (bastion_owner,
 * see owner.ts) to its programs, so a foreign stack can be named in logs
 * and status by the instance that attached it.
 */
import { attachTc, detachTc, destroyClsact, queryTc } from '../datapath/tc.js';
import { LibbpfError, lib, progInfo } from '../datapath/libbpf.js';
import { closeSync } from 'node:fs';
import { ForeignStackError, type StackOwner, type StackState } from '../manager/ports.js';
import { readOwnerPinPath } from './owner.js';

export const STACK_PROGRAMS = { ingress: 'from_container', egress: 'to_container' } as const;
/** Bastion's programs by name: the stack's, and a cluster node's from_overlay (tunnel device) and from_underlay (underlay interface), tunnel.ts */
const BASTION_PROGRAMS: ReadonlySet<string> = new Set([...Object.values(STACK_PROGRAMS), 'from_overlay', 'from_underlay']);

export interface StackProgramFds {
  fromContainer: number;
  toContainer: number;
}

export interface ProgramOwner {
  owner: Exclude<StackOwner, 'none'>;
  /** another instance's pin path, when its programs carry it */
  pinPath?: string;
}

/** Decides whose a program is, for one instance (see the header). */
export class Ownership {
  private readonly cache = new Map<number, ProgramOwner>();
  private readonly ownMapIds: ReadonlySet<number>;

  constructor(
    /**
     * the id of this instance's bastion_ep map, and of its bastion_ep_ip
     * (from_overlay, on a cluster node's tunnel device, reads only that one)
     */
    endpointMapIds: number | readonly number[],
    /** ids of the programs this instance loaded now (none for `bastion down` without a daemon) */
    private readonly selfProgramIds: ReadonlySet<number> = new Set(),
  ) {
    this.ownMapIds = new Set((typeof endpointMapIds === 'number' ? [endpointMapIds] : endpointMapIds).filter((id) => id > 0));
  }

  /** Whose the program with this id is (a program id is not reused while it lives, so answers are kept). */
  of(progId: number): ProgramOwner {
    if (this.selfProgramIds.has(progId)) return { owner: 'self' };
    const known = this.cache.get(progId);
    if (known) return known;
    const fd = lib().bpf_prog_get_fd_by_id(progId);
    if (fd < 0) return { owner: 'other' }; // gone meanwhile: not a stack to keep
    let r: ProgramOwner;
    try {
      const info = progInfo(fd);
      if (info.mapIds.some((id) => this.ownMapIds.has(id))) r = { owner: 'earlier' };
      else if (BASTION_PROGRAMS.has(info.name)) r = { owner: 'foreign', pinPath: readOwnerPinPath(info.mapIds) };
      else r = { owner: 'other' };
    } finally {
      closeSync(fd);
    }
    if (this.cache.size > 4096) this.cache.clear();
    this.cache.set(progId, r);
    return r;
  }
}

/** This instance's program: the one loaded now, or one a previous run on the same pins attached. */
export function isOurs(owner: StackOwner | undefined): boolean {
  return owner === 'self' || owner === 'earlier';
}

/** The less trusted of two hooks' owners: foreign > other > none > earlier > self. */
const RANK: Record<StackOwner, number> = { self: 0, earlier: 1, none: 2, other: 3, foreign: 4 };

/** Whose program is on one tc hook of an interface (also the tunnel device's, tunnel.ts). */
export function hookState(ifindex: number, dir: 'ingress' | 'egress', who: Ownership): { id?: number; owner: StackOwner; pinPath?: string; gone?: boolean } {
  let id: number | undefined;
  try {
    id = queryTc(ifindex, dir);
  } catch (err) {
    if (err instanceof LibbpfError && err.code === 'ENODEV') return { owner: 'none', gone: true };
    throw err;
  }
  if (id === undefined) return { owner: 'none' };
  const o = who.of(id);
  return { id, owner: o.owner, pinPath: o.pinPath };
}

export function stackState(ifindex: number, who: Ownership): StackState {
  const i = hookState(ifindex, 'ingress', who);
  if (i.gone) return { ok: false, owner: 'none', gone: true };
  const e = hookState(ifindex, 'egress', who);
  const worst = RANK[i.owner] >= RANK[e.owner] ? i : e;
  return {
    ...(i.owner === 'self' ? { ingress: i.id } : {}),
    ...(e.owner === 'self' ? { egress: e.id } : {}),
    ok: i.owner === 'self' && e.owner === 'self',
    owner: worst.owner,
    ...(worst.pinPath ? { ownerPinPath: worst.pinPath } : {}),
    ...(e.gone ? { gone: true } : {}),
  };
}

/**
 * Attach this instance's stack: replace its own (or a previous run's, or
 * something that is not a stack) in Bastion's slot, create it where the slot
 * is empty. Throws ForeignStackError, attaching nothing, when either hook
 * carries another instance's stack.
 */
export function attachStack(ifindex: number, fds: StackProgramFds, who: Ownership): void {
  for (const dir of ['ingress', 'egress'] as const) {
    const h = hookState(ifindex, dir, who);
    if (h.owner === 'foreign') throw new ForeignStackError(ifindex, h.pinPath);
  }
  attachHook(ifindex, 'ingress', fds.fromContainer, who, queryTc(ifindex, 'ingress') !== undefined);
  attachHook(ifindex, 'egress', fds.toContainer, who, queryTc(ifindex, 'egress') !== undefined);
}

/**
 * One program into Bastion's slot on a hook whose owner was checked (not
 * foreign): replacing when the slot was `occupied`, else taking the empty
 * slot without replacing, so another instance attaching at the same moment
 * is not overwritten (EEXIST: its owner is checked again before replacing).
 * The stack's two hooks, and the tunnel device's ingress (tunnel.ts).
 */
export function attachHook(ifindex: number, dir: 'ingress' | 'egress', fd: number, who: Ownership, occupied: boolean): void {
  try {
    attachTc(ifindex, dir, fd, { replace: occupied });
  } catch (err) {
    if (!(err instanceof LibbpfError && err.code === 'EEXIST')) throw err;
    const h = hookState(ifindex, dir, who);
    if (h.owner === 'foreign') throw new ForeignStackError(ifindex, h.pinPath);
    attachTc(ifindex, dir, fd, { replace: true });
  }
}

/**
 * Remove this instance's programs from an interface (and the clsact qdisc it
 * added, unless another instance's program is on it). Another instance's are
 * left alone. True if there was anything of ours.
 */
export function detachStack(ifindex: number, who: Ownership): boolean {
  let any = false;
  let foreign = false;
  for (const dir of ['ingress', 'egress'] as const) {
    const h = hookState(ifindex, dir, who);
    if (h.gone) return false;
    if (h.owner === 'foreign') foreign = true;
    if (!isOurs(h.owner)) continue;
    try {
      detachTc(ifindex, dir);
      any = true;
    } catch {
      // gone meanwhile
    }
  }
  if (any && !foreign) {
    try {
      destroyClsact(ifindex);
    } catch {
      // interface gone, or clsact already removed
    }
  }
  return any;
}
