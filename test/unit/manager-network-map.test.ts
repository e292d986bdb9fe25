/**
 * The manager's network map on its real code path (a recording datapath, a
 * table of made-up interfaces): endpoint lookups by host ifindex, which name
 * every flow event's endpoint, stay equal to a scan of the endpoints through
 * any sequence of placements, moves to another interface (a restarted
 * container), removals, and two entries naming one interface.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { endpointSpec, recordingManager, TableNode } from '../helpers/recording-datapath.js';

type Op = { kind: 'place'; name: number; iface: number } | { kind: 'remove'; name: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  // a few interfaces for a few names: moves and shared interfaces happen often
  fc.record({ kind: fc.constant('place' as const), name: fc.integer({ min: 0, max: 5 }), iface: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ kind: fc.constant('remove' as const), name: fc.integer({ min: 0, max: 5 }) }),
);

describe('manager: endpoints by ifindex', () => {
  it('endpointByIfindex answers what a scan of the endpoints would, after any sequence of changes (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
        const { manager, node } = recordingManager();
        for (const o of ops) {
          const spec = endpointSpec(`c${o.name}`);
          if (o.kind === 'place') {
            node.interfaces.set(spec.name, TableNode.iface(o.iface));
            await manager.upsertEndpoint(spec);
          } else {
            await manager.removeEndpoint(spec.key);
          }
          for (let i = 0; i <= 6; i++) {
            const ifindex = TableNode.iface(i).hostIfindex;
            const onIt = [...manager.endpoints.values()].filter((e) => e.hostIfindex === ifindex);
            const found = manager.endpointByIfindex(ifindex);
            if (onIt.length === 0) assert.equal(found, undefined, `ifindex ${ifindex}: no endpoint, yet found ${found?.name}`);
            else assert.ok(found && onIt.includes(found), `ifindex ${ifindex}: found ${found?.name}, endpoints there: ${onIt.map((e) => e.name)}`);
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  it('a container that comes back on another interface is found there, and no more on the old one', async () => {
    const { manager, node } = recordingManager();
    node.interfaces.set('web', TableNode.iface(1));
    node.interfaces.set('api', TableNode.iface(2));
    await manager.upsertEndpoints([
      { spec: endpointSpec('web'), known: TableNode.iface(1) },
      { spec: endpointSpec('api'), known: TableNode.iface(2) },
    ]);
    assert.equal(manager.endpointByIfindex(1001)?.name, 'web');
    node.interfaces.set('web', TableNode.iface(3));
    await manager.upsertEndpoint(endpointSpec('web'));
    assert.equal(manager.endpointByIfindex(1001), undefined);
    assert.equal(manager.endpointByIfindex(1003)?.name, 'web');
    assert.equal(manager.endpointByIfindex(1003), manager.endpoints.get('file:web'), 'the current endpoint, not a stale copy');
    await manager.removeEndpoint('file:api');
    assert.equal(manager.endpointByIfindex(1002), undefined);
  });
});
