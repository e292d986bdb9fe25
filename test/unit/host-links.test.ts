/**
 * The host-link snapshot discovery shares (src/agent/netns.ts): lookups in
 * its window are answered from it, and it is dropped when the window ends
 * instead of staying in memory until the next discovery (2.3 MB with 5,000
 * veths in a heap snapshot of the benchmark's daemon).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HostLinks } from '../../src/agent/netns.js';

describe('HostLinks', () => {
  it('answers from one snapshot within its window, and lets it go after', async () => {
    const links = new HostLinks(150);
    const lo = await links.byName('lo');
    assert.equal(lo?.ifname, 'lo');
    assert.equal(links.holding, true);
    assert.equal((await links.byIndex(lo!.ifindex))?.ifname, 'lo');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(links.holding, false, 'the snapshot is dropped once too old to serve');
    assert.equal((await links.byName('lo'))?.ifname, 'lo', 'and a new one is taken when needed');
    assert.equal(links.holding, true);
  });
});
