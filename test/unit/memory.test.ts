/**
 * The running daemon's periodic malloc trim (src/daemon/memory.ts): free
 * pages left between live blocks of glibc's heap go back to the system,
 * and the trim runs off the event loop.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import koffi from 'koffi';
import { trimPeriodically } from '../../src/daemon/memory.js';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/**
 * Resident KB of the mappings that hold the given addresses: where malloc
 * put the Buffers. Usually that is glibc's main heap ([heap]), but when
 * something is mapped right after the heap (V8 reserves its cages at random
 * addresses) brk fails and malloc goes on in anonymous mappings instead.
 */
function residentKbAround(addresses: bigint[]): number {
  const smaps = readFileSync('/proc/self/smaps', 'utf8').split('\n');
  let kb = 0;
  let holds = false;
  for (const line of smaps) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      const lo = BigInt('0x' + range[1]);
      const hi = BigInt('0x' + range[2]);
      holds = addresses.some((a) => a >= lo && a < hi);
    } else if (holds && line.startsWith('Rss:')) {
      kb += Number(/(\d+) kB/.exec(line)![1]);
    }
  }
  return kb;
}

describe('periodic malloc trim', () => {
  it('gives back the free pages between live blocks, on a worker thread', async () => {
    // 60 MB of malloc'd Buffers, two in three freed: free pages scattered between live ones
    let bufs: Buffer[] = [];
    for (let i = 0; i < 20_000; i++) bufs.push(Buffer.allocUnsafeSlow(1000 + (i % 50) * 100).fill(1));
    // one address per 64 KB is enough to find every mapping they went to
    const addresses = bufs.filter((_, i) => i % 16 === 0).map((b) => BigInt(koffi.address(b)));
    const mallocHeapKb = (): number => residentKbAround(addresses);
    bufs = bufs.filter((_, i) => i % 3 === 0);
    gc();
    gc();
    await new Promise((r) => setTimeout(r, 100)); // the sweeper frees the backing stores
    const before = mallocHeapKb();
    const stop = trimPeriodically(20);
    try {
      // the event loop keeps turning while the trim runs
      let turns = 0;
      const deadline = Date.now() + 2000;
      while (Date.now() < deadline && mallocHeapKb() > before - 10_000) {
        await new Promise((r) => setTimeout(r, 5));
        turns++;
      }
      const after = mallocHeapKb();
      assert.ok(after < before - 10_000, `malloc heap ${before} kB before, ${after} kB after`);
      assert.ok(turns > 0);
    } finally {
      stop();
    }
    assert.equal(bufs.length, 6667);
  });
});
