/**
 * Run inside a "host" network namespace (nsenter --net=...): load the
 * datapath under a pin path, attach container stacks and the tunnel program,
 * and write the map entries of a spec given as JSON on stdin. Then exit: the
 * tc filters keep the programs, the pins keep the maps, and the test reads
 * them from its own namespace (bpffs is not per network namespace).
 *
 * The test drives the datapath by hand here, without the manager, so the
 * packets' fate depends on the programs and the entries alone.
 */
import { readFileSync } from 'node:fs';
import { openDatapath } from '../../src/agent/datapath-agent.js';
import { ensureTunnelDevice, underlayOf } from '../../src/agent/tunnel.js';
import { ipJson } from '../../src/agent/netns.js';
import { CFG_F_TRACE_ALLOWED, MODE_ENFORCE, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL, PROTO_ANY } from '../../src/datapath/layout.js';

export interface NodeSpec {
  pin: string;
  /** direct: senders build the VXLAN packet and send it on the underlay (the daemon's way); else through the device */
  tunnel?: { device: string; underlay: string; port?: number; direct?: boolean };
  endpoints: Array<{ hostIf: string; identity: number; ip: string; mac: string; gwMac: string }>;
  remote: Array<{ ip: string; identity: number; nodeIp: string; mac: string }>;
  /** proto 0 with port 0: every protocol */
  policy: Array<{ ep: number; peer: number; dir: 0 | 1; proto: number; port: number }>;
  neigh: Array<{ ep: number; peer: number }>;
  ipcache: Array<{ addr: string; prefixlen: number; identity: number; flags: number }>;
}

async function main(): Promise<void> {
  const spec = JSON.parse(readFileSync(0, 'utf8')) as NodeSpec;
  const dp = await openDatapath(spec.pin);
  const links = await ipJson<{ ifindex: number; ifname: string }>(['link', 'show']);
  const ifindex = (name: string) => {
    const l = links.find((x) => x.ifname === name);
    if (!l) throw new Error(`no interface ${name}`);
    return l.ifindex;
  };
  const m = dp.maps;
  m.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
  for (const c of spec.ipcache) m.ipcache.set({ prefixlen: c.prefixlen, addr: c.addr }, { identity: c.identity, flags: c.flags });
  for (const r of spec.remote) m.remote.set(r.ip, { identity: r.identity, nodeIpv4: r.nodeIp, mac: r.mac, flags: 0 });
  for (const p of spec.policy) {
    const any = p.proto === PROTO_ANY;
    m.policy.set({ prefixlen: any ? POLICY_PREFIX_ANY_PROTO : POLICY_PREFIX_FULL, epId: p.ep, peerId: p.peer, direction: p.dir, proto: p.proto, dport: p.port }, { ruleId: 9, flags: 0 });
  }
  for (const n of spec.neigh) m.neigh.set({ epId: n.ep, peerId: n.peer }, 1);
  for (const e of spec.endpoints) {
    const ifi = ifindex(e.hostIf);
    dp.attach(ifi);
    const info = { identity: e.identity, ifindex: ifi, ipv4: e.ip, flags: 0, mac: e.mac, gwMac: e.gwMac };
    m.endpointsByIp.set(e.ip, info);
    m.endpoints.set(ifi, info);
  }
  if (spec.tunnel) {
    const u = await underlayOf(spec.tunnel.underlay);
    const t = await ensureTunnelDevice(spec.tunnel.device, spec.tunnel.port ?? 4789, spec.tunnel.underlay, u.mtu);
    dp.attachTunnel(t.ifindex);
    const port = spec.tunnel.port ?? 4789;
    m.tunnel.set({ ifindex: t.ifindex, localIpv4: u.address, flags: 0, ...(spec.tunnel.direct ? { underlayIfindex: u.ifindex, port } : {}) });
  }
  dp.close();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
