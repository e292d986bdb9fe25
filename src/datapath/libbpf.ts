/**
 * The system libbpf (libbpf.so.1, 1.1 API), bound through koffi.
 *
 * This module is the only place that knows C signatures and struct layouts.
 * The rest of the agent uses the small typed wrappers in bpf-object.ts,
 * bpf-map.ts, tc.ts, ringbuf.ts and prog-test-run.ts.
 *
 * Conventions of libbpf 1.x that shape this file:
 *  - integer-returning functions return 0 / a value on success and a negative
 *    errno on failure (libbpf 1.0 mode is always on), so the error comes from
 *    the return value, not from errno;
 *  - pointer-returning functions return NULL and set errno, which koffi
 *    captures right after the call (koffi.errno());
 *  - option structs start with a `sz` field that libbpf uses for forward and
 *    backward compatibility: it must be the size of the struct as compiled
 *    against the 1.1 headers, and bytes past what libbpf knows must be zero.
 *
 * libbpf's own log messages (including the verifier log after a failed
 * program load) are routed through libbpf_set_print to a JS callback, kept
 * while a call is in progress, and attached to the error that call throws.
 */
import koffi, { type LibraryHandle, type TypeObject } from 'koffi';
import { constants as osConstants } from 'node:os';
import { libc } from '../sys/libc.js';

/** koffi 3 represents C pointers as BigInt addresses (null for NULL). */
export type Pointer = bigint;

// ------------------------------------------------------------------ constants

/** bpf_map_update_elem flags (linux/bpf.h). */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BPF_F_LOCK = 4;

/** enum bpf_tc_attach_point (libbpf.h). */
export const BPF_TC_INGRESS = 1 << 0;
export const BPF_TC_EGRESS = 1 << 1;
/** enum bpf_tc_flags. */
export const BPF_TC_F_REPLACE = 1 << 0;

/** enum libbpf_print_level. */
export const LIBBPF_WARN = 0;
export const LIBBPF_INFO = 1;
export const LIBBPF_DEBUG = 2;

/** enum bpf_map_type values that store one value per possible CPU. */
export const BPF_MAP_TYPE_PERCPU_HASH = 5;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;
export const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21;
export const BPF_MAP_TYPE_RINGBUF = 27;
export const PERCPU_MAP_TYPES: ReadonlySet<number> = new Set([
  BPF_MAP_TYPE_PERCPU_HASH,
  BPF_MAP_TYPE_PERCPU_ARRAY,
  BPF_MAP_TYPE_LRU_PERCPU_HASH,
  BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
]);

/** sizeof(struct bpf_map_info) / sizeof(struct bpf_prog_info) in the 6.x uapi headers. */
export const BPF_MAP_INFO_SIZE = 88;
export const BPF_PROG_INFO_SIZE = 232;

// --------------------------------------------------------------------- errors

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);

/** An error from libbpf or the bpf() syscall, with the function that failed. */
export class LibbpfError extends Error {
  /** positive errno, e.g. 17 */
  readonly errno: number;
  /** symbolic errno, e.g. 'EEXIST' (undefined for libbpf's private codes) */
  readonly code: string | undefined;
  /** the libbpf function that failed */
  readonly fn: string;
  /** libbpf's warnings printed during the call (the verifier log among them) */
  readonly log: string;

  constructor(fn: string, errno: number, message: string, log = '') {
    super(message);
    this.name = 'LibbpfError';
    this.fn = fn;
    this.errno = errno;
    this.code = errnoNames.get(errno);
    this.log = log;
  }
}

/** Text for a (positive or negative) errno, libbpf's own codes included. */
export function strerror(err: number): string {
  const e = Math.abs(err);
  const buf = Buffer.alloc(256);
  // libbpf_strerror knows libbpf's private codes (4000+) and falls back to strerror_r.
  lib().libbpf_strerror(e, buf, buf.length);
  const nul = buf.indexOf(0);
  return buf.subarray(0, nul < 0 ? buf.length : nul).toString() || `errno ${e}`;
}

/** How many lines of libbpf output to quote in an error message (the full log stays in `.log`). */
const LOG_LINES_IN_MESSAGE = 40;

/**
 * Builds the error for a failed call: `fn(detail): strerror`, followed by
 * the tail of libbpf's log when there is one (that is where the verifier
 * says why a program was rejected).
 */
export function libbpfError(fn: string, err: number, detail?: string, log = ''): LibbpfError {
  const e = Math.abs(err);
  let message = `${fn}${detail ? `(${detail})` : ''}: ${strerror(e)}`;
  const trimmed = log.trimEnd();
  if (trimmed) {
    const lines = trimmed.split('\n');
    const tail = lines.slice(-LOG_LINES_IN_MESSAGE);
    message += `\nlibbpf log${lines.length > tail.length ? ` (last ${tail.length} of ${lines.length} lines)` : ''}:\n${tail.join('\n')}`;
  }
  return new LibbpfError(fn, e, message, log);
}

/** Throws for a negative return value; returns the value otherwise. */
export function check(fn: string, ret: number, detail?: string): number {
  if (ret < 0) throw libbpfError(fn, ret, detail);
  return ret;
}

// ---------------------------------------------------------- libbpf logging

export type LibbpfLogLevel = 'warn' | 'info' | 'debug';
export type LibbpfLogger = (level: LibbpfLogLevel, message: string) => void;

let userLogger: LibbpfLogger | undefined;
let userLogLevel = LIBBPF_WARN;
/** Stack of collectors: each running captureLog() call gets the warnings printed meanwhile. */
const collectors: string[][] = [];

/**
 * Routes libbpf's messages to `logger` (null: silence them, the default).
 * Warnings printed while a Bastion call runs are attached to its error
 * whatever the logger, so nothing is lost by staying silent.
 */
export function setLibbpfLogger(logger: LibbpfLogger | null, level: LibbpfLogLevel = 'warn'): void {
  userLogger = logger ?? undefined;
  userLogLevel = level === 'debug' ? LIBBPF_DEBUG : level === 'info' ? LIBBPF_INFO : LIBBPF_WARN;
  lib(); // make sure the print callback is installed
}

/**
 * Runs `fn` while collecting libbpf's warnings. `fn` gets a function that
 * returns what was collected so far, to put it into the error it throws.
 */
export function captureLog<T>(fn: (log: () => string) => T): T {
  lib();
  const lines: string[] = [];
  collectors.push(lines);
  try {
    return fn(() => lines.join(''));
  } finally {
    collectors.splice(collectors.lastIndexOf(lines), 1);
  }
}

// --------------------------------------------------------------- the binding

/** The koffi struct types, exported for tests of their layout. */
export interface Structs {
  bpf_object_open_opts: TypeObject;
  bpf_tc_hook: TypeObject;
  bpf_tc_opts: TypeObject;
  bpf_test_run_opts: TypeObject;
}

export interface OpenOpts {
  sz: number;
  object_name?: string | null;
  relaxed_maps?: boolean;
  pin_root_path?: string | null;
}
export interface TcHook {
  sz: number;
  ifindex: number;
  attach_point: number;
  parent: number;
}
export interface TcOpts {
  sz: number;
  prog_fd: number;
  flags: number;
  prog_id: number;
  handle: number;
  priority: number;
}
export interface TestRunOpts {
  sz: number;
  data_in: Pointer | null;
  data_out: Pointer | null;
  data_size_in: number;
  data_size_out: number;
  ctx_in: Pointer | null;
  ctx_out: Pointer | null;
  ctx_size_in: number;
  ctx_size_out: number;
  retval: number;
  repeat: number;
  duration: number;
  flags: number;
  cpu: number;
  batch_size: number;
}

/** Typed view of the libbpf functions we call. Buffers are passed by address, without copy. */
export interface Libbpf {
  structs: Structs;

  bpf_object__open_file(path: string, opts: OpenOpts): Pointer | null;
  bpf_object__load(obj: Pointer): number;
  bpf_object__close(obj: Pointer): void;
  bpf_object__find_program_by_name(obj: Pointer, name: string): Pointer | null;
  bpf_object__next_program(obj: Pointer, prev: Pointer | null): Pointer | null;
  bpf_object__find_map_by_name(obj: Pointer, name: string): Pointer | null;
  bpf_object__next_map(obj: Pointer, prev: Pointer | null): Pointer | null;
  bpf_program__name(prog: Pointer): string;
  bpf_program__fd(prog: Pointer): number;
  bpf_program__pin(prog: Pointer, path: string): number;
  bpf_program__unpin(prog: Pointer, path: string): number;
  bpf_map__name(map: Pointer): string;
  bpf_map__fd(map: Pointer): number;
  bpf_map__pin_path(map: Pointer): string | null;

  bpf_obj_get(path: string): number;
  bpf_obj_pin(fd: number, path: string): number;
  bpf_obj_get_info_by_fd(fd: number, info: Buffer, infoLen: Buffer): number;
  bpf_prog_get_fd_by_id(id: number): number;
  bpf_map_get_fd_by_id(id: number): number;

  bpf_map_update_elem(fd: number, key: Buffer, value: Buffer, flags: number): number;
  bpf_map_lookup_elem(fd: number, key: Buffer, value: Buffer): number;
  bpf_map_lookup_and_delete_elem(fd: number, key: Buffer, value: Buffer): number;
  bpf_map_delete_elem(fd: number, key: Buffer): number;
  bpf_map_get_next_key(fd: number, key: Buffer | null, nextKey: Buffer): number;
  /** BPF_MAP_LOOKUP_BATCH; `count` is in (room) and out (read); -ENOENT once the end is reached (with the last entries) */
  bpf_map_lookup_batch(fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: number[], opts: null): number;
  /** a map of our own, not from an object file (opts NULL: no flags) */
  bpf_map_create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, opts: null): number;
  /** BPF_PROG_BIND_MAP: the map becomes one of the program's maps (its map ids) without the program using it */
  bpf_prog_bind_map(progFd: number, mapFd: number, opts: null): number;

  bpf_tc_hook_create(hook: TcHook): number;
  bpf_tc_hook_destroy(hook: TcHook): number;
  bpf_tc_attach(hook: TcHook, opts: TcOpts): number;
  bpf_tc_detach(hook: TcHook, opts: TcOpts): number;
  bpf_tc_query(hook: TcHook, opts: TcOpts): number;

  ring_buffer__new(mapFd: number, cb: Pointer, ctx: Pointer | null, opts: Pointer | null): Pointer | null;
  ring_buffer__consume(rb: Pointer): number;
  ring_buffer__poll(rb: Pointer, timeoutMs: number): number;
  ring_buffer__epoll_fd(rb: Pointer): number;
  ring_buffer__free(rb: Pointer): void;
  /** the koffi callback type of ring_buffer_sample_fn, for koffi.register */
  RingBufferSampleFn: TypeObject;

  bpf_prog_test_run_opts(progFd: number, opts: TestRunOpts): number;

  libbpf_num_possible_cpus(): number;
  libbpf_strerror(err: number, buf: Buffer, size: number): number;

  /** errno of the last call made through koffi (for the pointer-returning ones) */
  errno(): number;
}

let bound: Libbpf | undefined;

/** The libbpf binding, loaded on first use (so importing this module never needs libbpf). */
export function lib(): Libbpf {
  if (!bound) bound = bind();
  return bound;
}

function bind(): Libbpf {
  let so: LibraryHandle;
  try {
    so = koffi.load('libbpf.so.1');
  } catch (e) {
    throw new Error(`cannot load libbpf.so.1 (install libbpf1): ${(e as Error).message}`);
  }

  // Layouts from /usr/include/bpf/libbpf.h and bpf.h (libbpf 1.1). The
  // trailing `size_t :0` of each struct only pads it to 8 bytes, which koffi
  // does by itself since every struct here holds a size_t.
  const bpf_object_open_opts = koffi.struct('bpf_object_open_opts', {
    sz: 'size_t',
    object_name: 'const char *',
    relaxed_maps: 'bool',
    pin_root_path: 'const char *',
    _attach_prog_fd: 'uint32_t', // `__u32 :32` in the header: the removed attach_prog_fd
    kconfig: 'const char *',
    btf_custom_path: 'const char *',
    kernel_log_buf: 'void *',
    kernel_log_size: 'size_t',
    kernel_log_level: 'uint32_t',
  });
  const bpf_tc_hook = koffi.struct('bpf_tc_hook', {
    sz: 'size_t',
    ifindex: 'int',
    attach_point: 'int', // enum bpf_tc_attach_point
    parent: 'uint32_t',
  });
  const bpf_tc_opts = koffi.struct('bpf_tc_opts', {
    sz: 'size_t',
    prog_fd: 'int',
    flags: 'uint32_t',
    prog_id: 'uint32_t',
    handle: 'uint32_t',
    priority: 'uint32_t',
  });
  // Pointers in here are raw addresses (koffi.address of a Buffer): the
  // kernel writes data_out/ctx_out in place, and the Buffers outlive the call.
  const bpf_test_run_opts = koffi.struct('bpf_test_run_opts', {
    sz: 'size_t',
    data_in: 'void *',
    data_out: 'void *',
    data_size_in: 'uint32_t',
    data_size_out: 'uint32_t',
    ctx_in: 'void *',
    ctx_out: 'void *',
    ctx_size_in: 'uint32_t',
    ctx_size_out: 'uint32_t',
    retval: 'uint32_t',
    repeat: 'int',
    duration: 'uint32_t',
    flags: 'uint32_t',
    cpu: 'uint32_t',
    batch_size: 'uint32_t',
  });

  // Sample callback: void *data is the record inside the ring buffer mapping,
  // valid only during the call, so ringbuf.ts copies it out.
  const RingBufferSampleFn = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');
  // The last argument is a va_list. On x86-64 (and arm64) a va_list
  // parameter is passed as a pointer to the va_list state, so we can receive
  // it as void * and hand it to vsnprintf, declared the same way.
  const LibbpfPrintFn = koffi.proto('int libbpf_print_fn(int level, void *fmt, void *ap)');

  const f = (decl: string) => so.func(decl);
  const api: Libbpf = {
    structs: { bpf_object_open_opts, bpf_tc_hook, bpf_tc_opts, bpf_test_run_opts },

    bpf_object__open_file: f('void *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
    bpf_object__load: f('int bpf_object__load(void *obj)'),
    bpf_object__close: f('void bpf_object__close(void *obj)'),
    bpf_object__find_program_by_name: f('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
    bpf_object__next_program: f('void *bpf_object__next_program(void *obj, void *prev)'),
    bpf_object__find_map_by_name: f('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
    bpf_object__next_map: f('void *bpf_object__next_map(void *obj, void *prev)'),
    bpf_program__name: f('const char *bpf_program__name(void *prog)'),
    bpf_program__fd: f('int bpf_program__fd(void *prog)'),
    bpf_program__pin: f('int bpf_program__pin(void *prog, const char *path)'),
    bpf_program__unpin: f('int bpf_program__unpin(void *prog, const char *path)'),
    bpf_map__name: f('const char *bpf_map__name(void *map)'),
    bpf_map__fd: f('int bpf_map__fd(void *map)'),
    bpf_map__pin_path: f('const char *bpf_map__pin_path(void *map)'),

    bpf_obj_get: f('int bpf_obj_get(const char *path)'),
    bpf_obj_pin: f('int bpf_obj_pin(int fd, const char *path)'),
    bpf_obj_get_info_by_fd: f('int bpf_obj_get_info_by_fd(int fd, void *info, void *info_len)'),
    bpf_prog_get_fd_by_id: f('int bpf_prog_get_fd_by_id(uint32_t id)'),
    bpf_map_get_fd_by_id: f('int bpf_map_get_fd_by_id(uint32_t id)'),

    bpf_map_update_elem: f('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    bpf_map_lookup_elem: f('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    bpf_map_lookup_and_delete_elem: f('int bpf_map_lookup_and_delete_elem(int fd, const void *key, void *value)'),
    bpf_map_delete_elem: f('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: f('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    bpf_map_lookup_batch: f('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const void *opts)'),
    bpf_map_create: f('int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const void *opts)'),
    bpf_prog_bind_map: f('int bpf_prog_bind_map(int prog_fd, int map_fd, const void *opts)'),

    bpf_tc_hook_create: f('int bpf_tc_hook_create(bpf_tc_hook *hook)'),
    bpf_tc_hook_destroy: f('int bpf_tc_hook_destroy(bpf_tc_hook *hook)'),
    // _Inout_: libbpf fills prog_id (attach) and everything (query) into opts.
    bpf_tc_attach: f('int bpf_tc_attach(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
    bpf_tc_detach: f('int bpf_tc_detach(const bpf_tc_hook *hook, const bpf_tc_opts *opts)'),
    bpf_tc_query: f('int bpf_tc_query(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),

    ring_buffer__new: f('void *ring_buffer__new(int map_fd, ring_buffer_sample_fn *cb, void *ctx, void *opts)'),
    ring_buffer__consume: f('int ring_buffer__consume(void *rb)'),
    ring_buffer__poll: f('int ring_buffer__poll(void *rb, int timeout_ms)'),
    ring_buffer__epoll_fd: f('int ring_buffer__epoll_fd(void *rb)'),
    ring_buffer__free: f('void ring_buffer__free(void *rb)'),
    RingBufferSampleFn,

    bpf_prog_test_run_opts: f('int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)'),

    libbpf_num_possible_cpus: f('int libbpf_num_possible_cpus(void)'),
    libbpf_strerror: f('int libbpf_strerror(int err, void *buf, size_t size)'),

    errno: () => koffi.errno(),
  };

  installPrint(so, LibbpfPrintFn);
  return api;
}

/** sizeof(va_list) where it is a struct passed by pointer: what a va_copy copies. */
const VA_LIST_SIZE: number | undefined = process.arch === 'x64' ? 24 : process.arch === 'arm64' ? 32 : undefined;

function installPrint(so: LibraryHandle, protoType: TypeObject): void {
  const setPrint = so.func('void *libbpf_set_print(libbpf_print_fn *fn)');
  const vsnprintf = libc().func('int vsnprintf(void *buf, size_t n, void *fmt, void *ap)');
  const memcpy = libc().func('void *memcpy(void *dst, void *src, size_t n)');
  const scratch = Buffer.alloc(8192);
  const apCopy = Buffer.alloc(VA_LIST_SIZE ?? 0);

  const format = (fmt: Pointer, ap: Pointer): string => {
    // vsnprintf consumes the va_list; keep a copy (va_copy is a plain copy of
    // the state on x86-64 and arm64) in case the message needs a larger buffer,
    // as the verifier log does.
    if (VA_LIST_SIZE) memcpy(apCopy, ap, VA_LIST_SIZE);
    const n: number = vsnprintf(scratch, scratch.length, fmt, ap);
    if (n < 0) return '';
    if (n < scratch.length) return scratch.toString('utf8', 0, n);
    if (!VA_LIST_SIZE) return scratch.toString('utf8', 0, scratch.length - 1) + '…\n';
    const big = Buffer.alloc(n + 1);
    vsnprintf(big, big.length, fmt, apCopy);
    return big.toString('utf8', 0, n);
  };

  const onPrint = (level: number, fmt: Pointer, ap: Pointer): number => {
    // Exceptions must not cross back into C (koffi would turn them into 0 anyway).
    try {
      const wantUser = userLogger !== undefined && level <= userLogLevel;
      const wantCollect = collectors.length > 0 && level === LIBBPF_WARN;
      if (!wantUser && !wantCollect) return 0; // don't even format debug chatter
      const msg = format(fmt, ap);
      if (wantCollect) for (const c of collectors) c.push(msg);
      if (wantUser) userLogger!(level === LIBBPF_WARN ? 'warn' : level === LIBBPF_INFO ? 'info' : 'debug', msg.trimEnd());
    } catch {
      /* a logging failure must never break the libbpf call */
    }
    return 0;
  };
  // Registered (not transient): libbpf keeps the pointer for the life of the process.
  const cb = koffi.register(onPrint, koffi.pointer(protoType));
  setPrint(cb);
}

// ------------------------------------------------------------ small helpers

/** libbpf_num_possible_cpus(), cached (it reads /sys once anyway). */
let possibleCpus: number | undefined;
export function numPossibleCpus(): number {
  if (possibleCpus === undefined) possibleCpus = check('libbpf_num_possible_cpus', lib().libbpf_num_possible_cpus());
  return possibleCpus;
}

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

/** struct bpf_map_info of a map fd: the kernel's own idea of its sizes. */
export function mapInfo(fd: number): MapInfo {
  const info = Buffer.alloc(BPF_MAP_INFO_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(info.length, 0);
  check('bpf_obj_get_info_by_fd', lib().bpf_obj_get_info_by_fd(fd, info, len), `map fd ${fd}`);
  return {
    type: info.readUInt32LE(0),
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
    flags: info.readUInt32LE(20),
    name: cString(info, 24, 16),
  };
}

export interface ProgInfo {
  type: number;
  id: number;
  name: string;
  /** ids of the maps the program uses (and those bound to it) */
  mapIds: number[];
}

/** Map ids asked for at most (Bastion's programs use about fifteen). */
const MAX_PROG_MAPS = 64;

/** struct bpf_prog_info of a program fd (type, id, name, map ids). */
export function progInfo(fd: number): ProgInfo {
  const info = Buffer.alloc(BPF_PROG_INFO_SIZE);
  const ids = Buffer.alloc(4 * MAX_PROG_MAPS);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(info.length, 0);
  // nr_map_ids (offset 52) in: room for ids, out: how many the program has; map_ids (56): where to put them
  info.writeUInt32LE(MAX_PROG_MAPS, 52);
  info.writeBigUInt64LE(BigInt(koffi.address(ids)), 56);
  check('bpf_obj_get_info_by_fd', lib().bpf_obj_get_info_by_fd(fd, info, len), `prog fd ${fd}`);
  const n = Math.min(info.readUInt32LE(52), MAX_PROG_MAPS);
  const mapIds: number[] = [];
  for (let i = 0; i < n; i++) mapIds.push(ids.readUInt32LE(4 * i));
  return { type: info.readUInt32LE(0), id: info.readUInt32LE(4), name: cString(info, 64, 16), mapIds };
}

function cString(b: Buffer, off: number, max: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + max ? off + max : end);
}
