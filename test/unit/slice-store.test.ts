import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAP_NAMES, type MapName } from '../../src/datapath/layout.js';
import { SliceStore, addEntry, emptyEntrySet, type EntrySet, type MapOp } from '../../src/manager/entries.js';
import { MapDigest } from '../../src/manager/digest.js';

/** maps whose entries a slice may rewrite (stats entries belong to the datapath once written) */
const MAPS: MapName[] = [MAP_NAMES.policy, MAP_NAMES.neigh, MAP_NAMES.ipcache, MAP_NAMES.endpoints];

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
    // keys of several lengths, with bytes above 0x7f (latin1 must keep them); a
    // policy key as layout.ts makes it: prefix length, then the slice's endpoint identity
    // (a neighbour key is two identities, 8 bytes, as the map's key size requires)
    const key =
      MAPS[w.map] === MAP_NAMES.policy
        ? Buffer.from([w.key, 0, 0, 0, 0x80 + slice, 1, 0, 0, 0xff - w.key, 0, 0, 0, 1, 6, 0, w.key])
        : shared
          ? Buffer.from([w.key, 0x80 | w.key, 0, 0, 0xff - w.key, 0, 0, 0x81])
          : Buffer.from([first, 0xff - w.key, 0x80 | w.key].slice(0, 1 + (w.key % 3)));
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

describe('SliceStore', () => {
  it('keeps the maps equal to the union of its slices, writing only what changed, each entry once per commit (property)', () => {
    const want = fc.array(fc.record({ map: fc.integer({ min: 0, max: MAPS.length - 1 }), key: fc.integer({ min: 0, max: 12 }), value: fc.integer({ min: 0, max: 2 }) }), { maxLength: 10 });
    // a commit replaces one slice or several (a policy change touches many)
    // (again: the slice's previous entries once more, as most slices of a policy change are, in part or whole)
    const step = fc.array(fc.record({ slice: fc.integer({ min: 0, max: 3 }), want, again: fc.boolean() }), { minLength: 1, maxLength: 3 });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 30 }), (steps) => {
        const store = new SliceStore();
        const kernel = new Map<string, string>();
        const slices = new Map<number, EntrySet>();
        const wanted = new Map<number, Want>();
        for (const replaced of steps) {
          for (const s of replaced) {
            const w = s.again ? (wanted.get(s.slice) ?? s.want) : s.want;
            wanted.set(s.slice, w);
            const next = entrySet(s.slice, w);
            store.replace(`s${s.slice}`, next);
            slices.set(s.slice, next);
          }
          const ops = store.commit();
          const keys = ops.map((o) => token(o.map, o.key));
          assert.equal(new Set(keys).size, keys.length, 'an entry written twice in one commit');
          const before = new Map(kernel);
          applyOps(kernel, ops);
          // the maps hold exactly the union of the slices' keys...
          const union = new Map<string, Set<string>>();
          for (const set of slices.values()) {
            for (const [map, entries] of set) {
              for (const [key, value] of entries) {
                const t = token(map, Buffer.from(key, 'latin1'));
                if (!union.has(t)) union.set(t, new Set());
                union.get(t)!.add(Buffer.from(value, 'latin1').toString('hex'));
              }
            }
          }
          assert.deepEqual([...kernel.keys()].sort(), [...union.keys()].sort());
          assert.equal(store.count(), union.size);
          // ...each with the value the slice that holds it wants
          for (const [t, v] of kernel) assert.ok(union.get(t)!.has(v), `${t} = ${v}, which no slice wants`);
          for (const r of new Set(replaced.map((x) => x.slice))) {
            for (const [map, entries] of slices.get(r)!) {
              for (const [key, value] of entries) assert.equal(kernel.get(token(map, Buffer.from(key, 'latin1'))), Buffer.from(value, 'latin1').toString('hex'));
            }
          }
          // an entry that was already right is not written again
          for (const o of ops) {
            if (o.op === 'upsert') assert.notEqual(before.get(token(o.map, o.key)), o.value.toString('hex'), `needless write of ${token(o.map, o.key)}`);
          }
          // entries() is what the maps hold, and each map's digest is the digest of what it holds
          const all = new Map<string, string>();
          for (const map of MAPS) {
            const d = new MapDigest();
            for (const [k, v] of store.entries(map)) {
              all.set(token(map, Buffer.from(k, 'latin1')), Buffer.from(v, 'latin1').toString('hex'));
              d.addString(k, v, 1);
              assert.equal(store.value(map, k), v, `value() of ${map}/${Buffer.from(k, 'latin1').toString('hex')}`);
            }
            const held = new MapDigest();
            for (const [t, v] of kernel) if (t.startsWith(`${map}/`)) held.addString(Buffer.from(t.slice(map.length + 1), 'hex').toString('latin1'), Buffer.from(v, 'hex').toString('latin1'), 1);
            assert.ok(store.digest(map).equals(held), `${map}: digest ${store.digest(map)} of what the maps hold is ${held}`);
            assert.ok(d.equals(held));
          }
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
    store.replace('ep', stats(0));
    assert.equal(store.commit().length, 1);
    store.replace('ep', stats(5));
    assert.deepEqual(store.commit(), []);
    assert.equal(store.count(MAP_NAMES.epStats), 1);
    store.remove('ep');
    const gone = store.commit();
    assert.deepEqual(gone.map((o) => [o.op, o.map]), [['delete', MAP_NAMES.epStats]]);
    assert.equal(store.has('ep'), false);
  });

  it('keeps an entry two slices hold until the last of them lets it go', () => {
    const store = new SliceStore();
    const neigh = () => {
      const set = emptyEntrySet();
      addEntry(set, { map: MAP_NAMES.neigh, key: Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]), value: Buffer.from([1]) });
      return set;
    };
    store.replace('a', neigh());
    assert.equal(store.commit().length, 1);
    store.replace('b', neigh());
    assert.equal(store.commit().length, 0);
    store.remove('a');
    assert.deepEqual(store.commit(), []);
    assert.equal(store.count(MAP_NAMES.neigh), 1);
    store.remove('b');
    assert.deepEqual(store.commit().map((o) => o.op), ['delete']);
    assert.equal(store.count(), 0);
  });

  it('writes nothing for an entry one slice lets go of and another takes up in the same commit', () => {
    // before: one slice per commit, the second slice's upsert was sorted before the first one's delete, and the entry was gone
    const store = new SliceStore();
    const addr = () => {
      const set = emptyEntrySet();
      addEntry(set, { map: MAP_NAMES.ipcache, key: Buffer.from([32, 0, 0, 0, 10, 0, 0, 2]), value: Buffer.from([0, 1, 0, 0, 0, 0, 0, 0]) });
      return set;
    };
    store.replace('old', addr());
    assert.equal(store.commit().length, 1);
    store.remove('old');
    store.replace('new', addr());
    assert.deepEqual(store.commit(), []);
    assert.equal(store.count(MAP_NAMES.ipcache), 1);
  });
});
