/**
 * Where a process's resident memory lies, from /proc/PID/smaps and the
 * daemon's own V8 figures (its /metrics: prom-client's default metrics),
 * so that the benchmark says which part a memory target would have to
 * come from, not only the total.
 */

/** Resident MB by kind of mapping, and V8's heap figures. */
export interface MemoryParts {
  /** the node binary's pages (file-backed, shared with every node process) */
  node_binary_mb: number;
  /** other file-backed pages: shared libraries, native addons (koffi, libbpf) */
  libraries_mb: number;
  /** glibc's main malloc arena ([heap]) */
  malloc_heap_mb: number;
  /** BPF maps mapped into the process (the flow ring buffer) */
  bpf_maps_mb: number;
  /** thread stacks the kernel labels ([stack]) */
  stacks_mb: number;
  /** every other anonymous mapping: V8's heap pages, other threads' malloc arenas, large mallocs, worker stacks */
  other_anon_mb: number;
  /** V8: heap committed and in use (all spaces), and memory outside the heap V8 knows of (Buffers) */
  v8_heap_total_mb: number | null;
  v8_heap_used_mb: number | null;
  v8_external_mb: number | null;
  /** V8's spaces, committed MB each (new_space, old_space, code_space, large_object_space, ...) */
  v8_spaces_mb: Record<string, number>;
}

const MB = 1024 * 1024;

/** Sums the Rss of every mapping in a smaps text, by kind (see MemoryParts). */
export function classifySmaps(smaps: string): Pick<MemoryParts, 'node_binary_mb' | 'libraries_mb' | 'malloc_heap_mb' | 'bpf_maps_mb' | 'stacks_mb' | 'other_anon_mb'> {
  const sums = { node: 0, lib: 0, heap: 0, bpf: 0, stack: 0, anon: 0 };
  let kind: keyof typeof sums = 'anon';
  for (const line of smaps.split('\n')) {
    // a mapping's header: "start-end perms offset dev inode [path]"
    const head = /^[0-9a-f]+-[0-9a-f]+ \S{4} [0-9a-f]+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      const path = head[1]!.trim();
      if (path === '[heap]') kind = 'heap';
      else if (path.startsWith('[stack')) kind = 'stack';
      else if (path.startsWith('anon_inode:bpf')) kind = 'bpf';
      else if (path.startsWith('/') && /\/node$/.test(path)) kind = 'node';
      else if (path.startsWith('/')) kind = 'lib';
      else kind = 'anon';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) sums[kind] += Number(rss[1]) * 1024;
  }
  const mb = (b: number) => +(b / MB).toFixed(1);
  return {
    node_binary_mb: mb(sums.node),
    libraries_mb: mb(sums.lib),
    malloc_heap_mb: mb(sums.heap),
    bpf_maps_mb: mb(sums.bpf),
    stacks_mb: mb(sums.stack),
    other_anon_mb: mb(sums.anon),
  };
}

/** V8's figures from a Prometheus text of prom-client's default metrics (prefix included in the names). */
export function v8FromMetrics(text: string, prefix = 'bastion_daemon_'): Pick<MemoryParts, 'v8_heap_total_mb' | 'v8_heap_used_mb' | 'v8_external_mb' | 'v8_spaces_mb'> {
  const one = (name: string): number | null => {
    const m = new RegExp(`^${prefix}${name} (\\S+)$`, 'm').exec(text);
    return m ? +(Number(m[1]) / MB).toFixed(1) : null;
  };
  const spaces: Record<string, number> = {};
  for (const m of text.matchAll(new RegExp(`^${prefix}nodejs_heap_space_size_total_bytes\\{space="([^"]+)"\\} (\\S+)$`, 'gm'))) {
    spaces[m[1]!] = +(Number(m[2]) / MB).toFixed(1);
  }
  return {
    v8_heap_total_mb: one('nodejs_heap_size_total_bytes'),
    v8_heap_used_mb: one('nodejs_heap_size_used_bytes'),
    v8_external_mb: one('nodejs_external_memory_bytes'),
    v8_spaces_mb: spaces,
  };
}
