/**
 * Loading a compiled BPF object (bpf/*.o) with libbpf.
 *
 * Maps declared with `pinning = LIBBPF_PIN_BY_NAME` are pinned under the pin
 * root at load time, or, if a compatible map is already pinned there, reused:
 * that is how from_container.o and to_container.o share one set of maps, and
 * how a restarted agent finds the maps the running programs use.
 */
import { resolve } from 'node:path';
import { BpfMap } from './bpf-map.js';
import { ensurePinRoot } from './bpffs.js';
import { captureLog, check, lib, libbpfError, type Pointer } from './libbpf.js';
import { DEFAULT_PIN_PATH } from './layout.js';

export interface LoadOptions {
  /** directory on bpffs for LIBBPF_PIN_BY_NAME maps (default /sys/fs/bpf/bastion) */
  pinRoot?: string;
  /** object name override (defaults to the file's base name) */
  name?: string;
}

export interface BpfObject {
  readonly path: string;
  readonly pinRoot: string;
  /** fd of a program; stays valid until close() */
  program(name: string): number;
  /** names of every program in the object */
  programs(): string[];
  /** a map of the object; the BpfMap's fd belongs to the object */
  map(name: string): BpfMap;
  /** names of every map in the object (including .rodata/.bss internal maps) */
  maps(): string[];
  /** pins a program at `path` (bpffs) */
  pinProgram(name: string, path: string): void;
  /**
   * Releases the object: program and map fds are closed. Attached programs
   * and pinned maps live on (tc filters and pins hold them).
   */
  close(): void;
}

/** sizeof(struct bpf_object_open_opts) in libbpf 1.1. */
const OPEN_OPTS_SIZE = 80;

/**
 * Opens and loads `path`. Throws a LibbpfError naming the failing step; when
 * the verifier rejects a program its log is in the message (tail) and in
 * `.log` (whole).
 */
export function loadObject(path: string, opts: LoadOptions = {}): BpfObject {
  const l = lib();
  const file = resolve(path);
  const pinRoot = ensurePinRoot(opts.pinRoot ?? DEFAULT_PIN_PATH);
  if (l.structs.bpf_object_open_opts.size !== OPEN_OPTS_SIZE) {
    throw new Error(`bpf_object_open_opts is ${l.structs.bpf_object_open_opts.size} bytes, expected ${OPEN_OPTS_SIZE}`);
  }

  const obj = captureLog((log) => {
    const o = l.bpf_object__open_file(file, {
      sz: OPEN_OPTS_SIZE,
      object_name: opts.name ?? null,
      pin_root_path: pinRoot,
    });
    if (!o) throw libbpfError('bpf_object__open_file', l.errno() || 22, file, log());
    return o;
  });

  try {
    captureLog((log) => {
      const ret = l.bpf_object__load(obj);
      if (ret < 0) throw libbpfError('bpf_object__load', ret, file, log());
    });
  } catch (e) {
    l.bpf_object__close(obj);
    throw e;
  }
  return new LoadedObject(obj, file, pinRoot);
}

class LoadedObject implements BpfObject {
  private handle: Pointer | undefined;
  private readonly mapCache = new Map<string, BpfMap>();

  constructor(
    handle: Pointer,
    readonly path: string,
    readonly pinRoot: string,
  ) {
    this.handle = handle;
  }

  program(name: string): number {
    const prog = this.findProgram(name);
    return check('bpf_program__fd', lib().bpf_program__fd(prog), name);
  }

  programs(): string[] {
    const l = lib();
    const obj = this.obj();
    const names: string[] = [];
    for (let p = l.bpf_object__next_program(obj, null); p; p = l.bpf_object__next_program(obj, p)) names.push(l.bpf_program__name(p));
    return names;
  }

  map(name: string): BpfMap {
    const cached = this.mapCache.get(name);
    if (cached) return cached;
    const l = lib();
    const m = l.bpf_object__find_map_by_name(this.obj(), name);
    if (!m) throw new Error(`${this.path}: no map ${name} (maps: ${this.maps().join(', ')})`);
    const fd = check('bpf_map__fd', l.bpf_map__fd(m), name);
    // The object owns the fd: bpf_object__close closes it.
    const map = new BpfMap(fd, { ownsFd: false, label: name });
    this.mapCache.set(name, map);
    return map;
  }

  maps(): string[] {
    const l = lib();
    const obj = this.obj();
    const names: string[] = [];
    for (let m = l.bpf_object__next_map(obj, null); m; m = l.bpf_object__next_map(obj, m)) names.push(l.bpf_map__name(m));
    return names;
  }

  pinProgram(name: string, path: string): void {
    const prog = this.findProgram(name);
    captureLog((log) => {
      const ret = lib().bpf_program__pin(prog, path);
      if (ret < 0) throw libbpfError('bpf_program__pin', ret, `${name} at ${path}`, log());
    });
  }

  close(): void {
    if (this.handle === undefined) return;
    for (const m of this.mapCache.values()) m.close();
    this.mapCache.clear();
    lib().bpf_object__close(this.handle);
    this.handle = undefined;
  }

  private findProgram(name: string): Pointer {
    const p = lib().bpf_object__find_program_by_name(this.obj(), name);
    if (!p) throw new Error(`${this.path}: no program ${name} (programs: ${this.programs().join(', ')})`);
    return p;
  }

  private obj(): Pointer {
    if (this.handle === undefined) throw new Error(`${this.path}: object is closed`);
    return this.handle;
  }
}
