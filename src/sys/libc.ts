/**
 * The C library, loaded once through koffi for every module that calls it
 * (inotify, flock and pidfds, mount, if_nametoindex, malloc tuning, the
 * libbpf print callback). Each function is declared once, on first use.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { getSystemErrorName } from 'node:util';

let handle: LibraryHandle | undefined;
const declared = new Map<string, unknown>();

/** The libc.so.6 handle; throws where there is no glibc (callers that can do without catch it). */
export function libc(): LibraryHandle {
  if (!handle) handle = koffi.load('libc.so.6');
  return handle;
}

/** A libc function from its C prototype, bound on first use and kept. */
export function libcFunction<F>(prototype: string): F {
  let f = declared.get(prototype);
  if (!f) {
    f = libc().func(prototype);
    declared.set(prototype, f);
  }
  return f as F;
}

/** The name of a C errno (EPERM, ENOENT...), from koffi.errno() after a failed call. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}
