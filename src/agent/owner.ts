/**
 * An instance's name tag on the programs it loads: a one-entry array map
 * holding the instance's pin path, pinned under that path as bastion_owner
 * and bound to both programs (BPF_PROG_BIND_MAP, kernel 5.10+), so that it
 * is among the programs' map ids although they never read it. Another
 * instance that finds these programs attached can then say whose they are
 * (logs, `bastion status`). Whose a stack *is* is decided by the maps it
 * enforces with (stack.ts), not by this tag.
 */
import { closeSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap } from '../datapath/bpf-map.js';
import { LibbpfError, lib, libbpfError, mapInfo } from '../datapath/libbpf.js';

export const OWNER_MAP = 'bastion_owner';
const BPF_MAP_TYPE_ARRAY = 2;
const VALUE_SIZE = 256;
const KEY0 = Buffer.alloc(4);

/** The instance's tag under `pinRoot`: the pinned one, or a new one holding `pinRoot`. */
export function openOwnerMap(pinRoot: string): BpfMap {
  const path = join(pinRoot, OWNER_MAP);
  try {
    return BpfMap.openPinned(path, 4, VALUE_SIZE);
  } catch (err) {
    if (!(err instanceof LibbpfError && err.code === 'ENOENT')) throw err;
  }
  const fd = lib().bpf_map_create(BPF_MAP_TYPE_ARRAY, OWNER_MAP, 4, VALUE_SIZE, 1, null);
  if (fd < 0) throw libbpfError('bpf_map_create', fd, OWNER_MAP);
  const map = new BpfMap(fd, { ownsFd: true, label: path });
  const value = Buffer.alloc(VALUE_SIZE);
  value.write(pinRoot.slice(0, VALUE_SIZE - 1), 'utf8');
  map.update(KEY0, value);
  map.pin(path);
  return map;
}

/** Tags a loaded program with the owner map. */
export function bindOwner(progFd: number, owner: BpfMap): void {
  const ret = lib().bpf_prog_bind_map(progFd, owner.fd, null);
  if (ret < 0) throw libbpfError('bpf_prog_bind_map', ret, OWNER_MAP);
}

/** The pin path in the owner map among these map ids (a program's), if there is one. */
export function readOwnerPinPath(mapIds: readonly number[]): string | undefined {
  for (const id of mapIds) {
    const fd = lib().bpf_map_get_fd_by_id(id);
    if (fd < 0) continue;
    try {
      const info = mapInfo(fd);
      if (info.name !== OWNER_MAP || info.valueSize !== VALUE_SIZE) continue;
      const value = Buffer.alloc(VALUE_SIZE);
      if (lib().bpf_map_lookup_elem(fd, KEY0, value) < 0) continue;
      const end = value.indexOf(0);
      return value.toString('utf8', 0, end < 0 ? VALUE_SIZE : end);
    } finally {
      closeSync(fd);
    }
  }
  return undefined;
}
