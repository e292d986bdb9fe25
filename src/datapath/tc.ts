/**
 * Attaching programs to an interface's tc hooks (clsact qdisc), through
 * libbpf's netlink helpers: no `tc` command involved.
 *
 * Bastion owns exactly one filter per hook: handle 1, priority 1. Attaching
 * over a filter uses BPF_TC_F_REPLACE, so attaching again swaps the program
 * atomically in that one filter (packets see the old or the new program,
 * never none and never both), and repeated attaches never stack up filters.
 * Attaching to an empty slot can be done without it (replace: false): then
 * a filter that appeared meanwhile is an error (EEXIST), not overwritten.
 */
import { BPF_TC_EGRESS, BPF_TC_F_REPLACE, BPF_TC_INGRESS, lib, libbpfError, type TcHook, type TcOpts } from './libbpf.js';

export type TcDirection = 'ingress' | 'egress';

/** The filter Bastion owns on each hook. */
export const TC_HANDLE = 1;
export const TC_PRIORITY = 1;

/** sizeof(struct bpf_tc_hook) and sizeof(struct bpf_tc_opts) in libbpf 1.1. */
const TC_HOOK_SIZE = 24;
const TC_OPTS_SIZE = 32;

const ENOENT = 2;
const EEXIST = 17;
const EINVAL = 22;

function hook(ifindex: number, attachPoint: number): TcHook {
  return { sz: TC_HOOK_SIZE, ifindex, attach_point: attachPoint, parent: 0 };
}

function point(dir: TcDirection): number {
  return dir === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}

/** Our filter's identity; prog_fd, flags and prog_id must be zero except where a call needs them. */
function opts(progFd = 0, flags = 0): TcOpts {
  return { sz: TC_OPTS_SIZE, prog_fd: progFd, flags, prog_id: 0, handle: TC_HANDLE, priority: TC_PRIORITY };
}

/** Creates the clsact qdisc on `ifindex`; false if it was already there. */
export function ensureClsact(ifindex: number): boolean {
  const ret = lib().bpf_tc_hook_create(hook(ifindex, BPF_TC_INGRESS));
  if (ret === -EEXIST) return false;
  if (ret < 0) throw libbpfError('bpf_tc_hook_create', ret, `ifindex ${ifindex}`);
  return true;
}

/**
 * Attaches `progFd` to the `dir` hook of `ifindex` (creating clsact if
 * needed), replacing whatever program our filter had (unless `replace` is
 * false: then an existing filter fails with EEXIST). Returns the attached
 * program's id.
 */
export function attachTc(ifindex: number, dir: TcDirection, progFd: number, o2: { replace?: boolean } = {}): { progId: number } {
  ensureClsact(ifindex);
  const o = opts(progFd, o2.replace === false ? 0 : BPF_TC_F_REPLACE);
  const ret = lib().bpf_tc_attach(hook(ifindex, point(dir)), o);
  if (ret < 0) throw libbpfError('bpf_tc_attach', ret, `ifindex ${ifindex}, ${dir}`);
  return { progId: o.prog_id };
}

/** Id of the program in our filter on that hook, or undefined (no filter, or no clsact). */
export function queryTc(ifindex: number, dir: TcDirection): number | undefined {
  const o = opts();
  const ret = lib().bpf_tc_query(hook(ifindex, point(dir)), o);
  // ENOENT: no such filter. EINVAL: no clsact qdisc on the interface at all.
  if (ret === -ENOENT || ret === -EINVAL) return undefined;
  if (ret < 0) throw libbpfError('bpf_tc_query', ret, `ifindex ${ifindex}, ${dir}`);
  return o.prog_id;
}

/** Removes our filter from that hook; false when there was none. */
export function detachTc(ifindex: number, dir: TcDirection): boolean {
  const ret = lib().bpf_tc_detach(hook(ifindex, point(dir)), opts());
  if (ret === -ENOENT || ret === -EINVAL) return false;
  if (ret < 0) throw libbpfError('bpf_tc_detach', ret, `ifindex ${ifindex}, ${dir}`);
  return true;
}

/**
 * Deletes the clsact qdisc, with every filter on both hooks (ours and anyone
 * else's). False when there was none.
 */
export function destroyClsact(ifindex: number): boolean {
  const ret = lib().bpf_tc_hook_destroy(hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS));
  if (ret === -ENOENT || ret === -EINVAL) return false;
  if (ret < 0) throw libbpfError('bpf_tc_hook_destroy', ret, `ifindex ${ifindex}`);
  return true;
}
