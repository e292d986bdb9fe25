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
import { trimPeriodically } from '../../src/daemon/memory.js';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** resident KB of glibc's main heap ([heap] in smaps) */
function mallocHeapKb(): number {
  const smaps = readFileSync('/proc/self/smaps', 'utf8');
  const at = smaps.indexOf('[heap]');
  if (at < 0) return 0;
  return Number(/Rss:\s+(\d+) kB/.exec(smaps.slice(at))![1]);
}

describe('periodic malloc trim', () => {
  it('gives back the free pages between live blocks, on a worker thread', async () => {
    // 60 MB of malloc'd Buffers, two in three freed: free pages scattered between live ones
    let bufs: Buffer[] = [];
    for (let i = 0; i < 20_000; i++) bufs.push(Buffer.allocUnsafeSlow(1000 + (i % 50) * 100).fill(1));
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
