import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAP_NAMES, type MapName } from '../../src/datapath/layout.js';
import { SliceStore, addEntry, emptyEntrySet, type EntrySet, type MapOp } from '../../src/manager/entries.js';

/** maps whose entries a slice may rewrite (stats entries belong to the datapath once written) */
const MAPS: MapName[] = [MAP_NAMES.policy, MAP_NAMES.neigh, MAP_NAMES.ipcache, MAP_NAMES.endpoints];
const UPSERT_RANK: MapName[] = [MAP_NAMES.ipcache, MAP_NAMES.policy, MAP_NAMES.neigh, MAP_NAMES.epStats, MAP_NAMES.endpointsByIp, MAP_NAMES.endpoints, MAP_NAMES.config];
const DELETE_RANK: MapName[] = [MAP_NAMES.endpoints, MAP_NAMES.endpointsByIp, MAP_NAMES.neigh, MAP_NAMES.policy, MAP_NAMES.ipcache, MAP_NAMES.epStats];

type Want = Array<{ map: number; key: number; value: number }>;

/**
 * A slice's entries as the compiler makes them: neighbour pairs may be held
 * by several slices and always have the same value; every other key belongs
 * to one slice (it starts with its endpoint's identity or ifindex), whose
 * value may change from one replace to the next.
 */
function entrySet(slice: number, want: Want): EntrySet {
  const set = emptyEntrySet();
  for (const w of want) {
    const shared = MAPS[w.map] === MAP_NAMES.neigh;
    const first = shared ? w.key : 16 * slice + w.key;
    // keys of several lengths, with bytes above 0x7f (latin1 must keep them)
    const key = Buffer.from([first, 0xff - w.key, 0x80 | w.key].slice(0, 1 + (w.key % 3)));
    addEntry(set, { map: MAPS[w.map]!, key, value: Buffer.from([shared ? 1 : w.value, 0xfe]) });
  }
  return set;
}

const token = (map: MapName, key: Buffer) => `${map}/${key.toString('hex')}`;

/** what the kernel holds after the writes, as map/hexkey → hexvalue */
function applyOps(kernel: Map<string, string>, ops: MapOp[]): void {
  for (const o of ops) {
    if (o.op === 'upsert') kernel.set(token(o.map, o.key), o.value.toString('hex'));
    else {
      assert.ok(kernel.delete(token(o.map, o.key)), `delete of an entry the maps do not hold: ${token(o.map, o.key)}`);
    }
  }
}

function checkOrder(ops: MapOp[]): void {
  let seenDelete = false;
  let rank = -1;
  for (const o of ops) {
    if (o.op === 'delete' && !seenDelete) {
      seenDelete = true;
      rank = -1;
    }
    assert.ok(!(seenDelete && o.op === 'upsert'), 'an upsert after a delete');
    const r = (o.op === 'upsert' ? UPSERT_RANK : DELETE_RANK).indexOf(o.map);
    assert.ok(r >= rank, `${o.op} of ${o.map} out of order`);
    rank = r;
  }
}

describe('SliceStore', () => {
  it('keeps the maps equal to the union of its slices, writing only what changed (property)', () => {
    const want = fc.array(fc.record({ map: fc.integer({ min: 0, max: MAPS.length - 1 }), key: fc.integer({ min: 0, max: 12 }), value: fc.integer({ min: 0, max: 2 }) }), { maxLength: 10 });
    const step = fc.record({ slice: fc.integer({ min: 0, max: 3 }), want });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 30 }), (steps) => {
        const store = new SliceStore();
        const kernel = new Map<string, string>();
        const slices = new Map<number, EntrySet>();
        for (const s of steps) {
          const next = entrySet(s.slice, s.want);
          const ops = store.replace(`s${s.slice}`, next);
          checkOrder(ops);
          const before = new Map(kernel);
          applyOps(kernel, ops);
          slices.set(s.slice, next);
          // the maps hold exactly the union of the slices' keys...
          const union = new Map<string, Set<string>>();
          for (const set of slices.values()) {
            for (const [map, entries] of set) {
              for (const e of entries.values()) {
                const t = token(map, e.key);
                if (!union.has(t)) union.set(t, new Set());
                union.get(t)!.add(e.value.toString('hex'));
              }
            }
          }
          assert.deepEqual([...kernel.keys()].sort(), [...union.keys()].sort());
          assert.equal(store.count(), union.size);
          // ...each with the value the slice that holds it wants
          for (const [t, v] of kernel) assert.ok(union.get(t)!.has(v), `${t} = ${v}, which no slice wants`);
          for (const [map, entries] of next) {
            for (const e of entries.values()) assert.equal(kernel.get(token(map, e.key)), e.value.toString('hex'));
          }
          // an entry that was already right is not written again
          for (const o of ops) {
            if (o.op === 'upsert') assert.notEqual(before.get(token(o.map, o.key)), o.value.toString('hex'), `needless write of ${token(o.map, o.key)}`);
          }
          // and all() is what the maps hold
          const all = new Map<string, string>();
          for (const [map, entries] of store.all()) for (const e of entries.values()) all.set(token(map, e.key), e.value.toString('hex'));
          assert.deepEqual(all, kernel);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('writes a stats entry once and never overwrites what the datapath counted', () => {
    const store = new SliceStore();
    const stats = (v: number) => {
      const set = emptyEntrySet();
      addEntry(set, { map: MAP_NAMES.epStats, key: Buffer.from([7, 0, 0, 0]), value: Buffer.from([v]) });
      return set;
    };
    assert.equal(store.replace('ep', stats(0)).length, 1);
    assert.deepEqual(store.replace('ep', stats(5)), []);
    assert.equal(store.count(MAP_NAMES.epStats), 1);
    const gone = store.remove('ep');
    assert.deepEqual(gone.map((o) => [o.op, o.map]), [['delete', MAP_NAMES.epStats]]);
    assert.equal(store.has('ep'), false);
  });

  it('keeps an entry two slices hold until the last of them lets it go', () => {
    const store = new SliceStore();
    const neigh = () => {
      const set = emptyEntrySet();
      addEntry(set, { map: MAP_NAMES.neigh, key: Buffer.from([1, 2]), value: Buffer.from([1]) });
      return set;
    };
    assert.equal(store.replace('a', neigh()).length, 1);
    assert.equal(store.replace('b', neigh()).length, 0);
    assert.deepEqual(store.remove('a'), []);
    assert.equal(store.count(MAP_NAMES.neigh), 1);
    assert.deepEqual(store.remove('b').map((o) => o.op), ['delete']);
    assert.equal(store.count(), 0);
  });
});
