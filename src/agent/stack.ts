/**
 * A container's stack on its host-side veth: from_container on tc ingress
 * (what the container sends), to_container on tc egress (what it receives).
 * Both use a fixed handle and priority, so attaching again replaces in one
 * step and never stacks a second copy.
 */
import { attachTc, detachTc, destroyClsact, queryTc } from '../datapath/tc.js';
import { lib, progInfo } from '../datapath/libbpf.js';
import { closeSync } from 'node:fs';
import type { StackState } from '../manager/ports.js';

export const STACK_PROGRAMS = { ingress: 'from_container', egress: 'to_container' } as const;

export interface StackProgramFds {
  fromContainer: number;
  toContainer: number;
}

export function attachStack(ifindex: number, fds: StackProgramFds): void {
  attachTc(ifindex, 'ingress', fds.fromContainer);
  attachTc(ifindex, 'egress', fds.toContainer);
}

function progName(id: number): string | undefined {
  const fd = lib().bpf_prog_get_fd_by_id(id);
  if (fd < 0) return undefined;
  try {
    return progInfo(fd).name;
  } finally {
    closeSync(fd);
  }
}

function ours(ifindex: number, dir: 'ingress' | 'egress'): number | undefined {
  let id: number | undefined;
  try {
    id = queryTc(ifindex, dir);
  } catch {
    return undefined;
  }
  if (id === undefined) return undefined;
  return progName(id) === STACK_PROGRAMS[dir] ? id : undefined;
}

export function stackState(ifindex: number): StackState {
  const ingress = ours(ifindex, 'ingress');
  const egress = ours(ifindex, 'egress');
  return { ingress, egress, ok: ingress !== undefined && egress !== undefined };
}

/** Remove our programs from an interface (and the clsact qdisc we added). True if there was anything. */
export function detachStack(ifindex: number): boolean {
  const s = stackState(ifindex);
  let any = false;
  for (const dir of ['ingress', 'egress'] as const) {
    if (s[dir] === undefined) continue;
    try {
      detachTc(ifindex, dir);
      any = true;
    } catch {
      // gone meanwhile
    }
  }
  if (any) {
    try {
      destroyClsact(ifindex);
    } catch {
      // interface gone, or clsact already removed
    }
  }
  return any;
}
