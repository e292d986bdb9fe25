/**
 * The manager's ports without a host, for the tools that run the real config
 * loader, compiler and manager at N containers (bench/tools/daemon-heap.ts,
 * drift-check.ts): a datapath that does nothing unless told otherwise, and a
 * node that makes up each container's interface from its place in the list.
 */
import type { DatapathPort, Discovered, NodePort } from '../../src/manager/ports.js';
import type { Entry } from './topology.js';

/** A datapath with no interfaces and no maps; `with` replaces what a tool needs real or counted. */
export function fakeDatapath(with_: Partial<DatapathPort> = {}): DatapathPort {
  return {
    attach() {},
    detach() {},
    stackState: () => ({ ok: true, owner: 'self' }),
    apply() {},
    async *readMap() {},
    flushConntrack: () => 0,
    counters: () => new Map(),
    endpointStats: () => undefined,
    existingEndpoints: () => [],
    existingIpcache: () => [],
    attachedIfindexes: () => [],
    loadNextIdentity: () => undefined,
    saveNextIdentity() {},
    onEvent() {},
    close() {},
    ...with_,
  };
}

/** The host's address in a made-up node. */
export const FAKE_HOST_ADDRESS = '10.9.0.1';

/** A node whose containers are `entries`, the i-th at 10.9.x.(i+2)/16 on interface v<i>. */
export function fakeNode(entries: readonly Entry[]): NodePort {
  const ipOf = (i: number) => `10.9.${(i >> 8) & 255}.${i & 255}`;
  const index = new Map(entries.map((e, i) => [e.netns, i]));
  return {
    async discover(spec) {
      const i = index.get(spec.netns.kind === 'name' ? spec.netns.name : '')!;
      const hex = (i + 0x100).toString(16).padStart(6, '0');
      return { ipv4: ipOf(i + 2), prefixLen: 16, mac: `02:00:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4)}`, hostIfindex: 1000 + i, hostIfname: `v${i}`, gwMac: '02:00:00:00:00:01', bridge: 'br0' } satisfies Discovered;
    },
    hostAddresses: async () => [FAKE_HOST_ADDRESS],
  };
}
