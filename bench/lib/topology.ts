/**
 * Namespace "containers" on Linux bridges, all inside one private "host"
 * network namespace that the benchmark creates for itself.
 *
 * Layout (prefix P, e.g. "bb3fa2", subnet 10.S.0.0/16):
 *   netns Ph          the benchmark's host: bridges Pb0, Pb1, ..., the host-side
 *                     veths Pv<i>, the iptables rules, the Bastion daemon
 *   netns Pclient     entry 0 (the measured client), eth0 = 10.S.0.2
 *   netns Pserver     entry 1 (the measured server), eth0 = 10.S.0.3
 *   netns Pn<k>       filler entries 2..N-1 (scale series only)
 *
 * A Linux bridge takes at most 1024 ports (BR_MAX_PORTS), so entries are spread
 * over bridges of BRIDGE_PORTS ports each: bridge k has 10.S.(4k).0/22 with the
 * gateway .1 on the bridge. The measured pair is always on bridge 0.
 *
 * Why a private host namespace: the bridge-netfilter switches
 * (net.bridge.bridge-nf-call-iptables), the iptables rules and conntrack are
 * per network namespace, so the baseline "bridge" scenario is truly free of
 * netfilter even if Docker (which sets the global switch) runs on the machine,
 * nothing the benchmark does leaks into the real host, and cleanup is one
 * namespace deletion.
 */
import { existsSync, readdirSync } from 'node:fs';
import { inNs, run, runSync } from './exec.js';

export const BRIDGE_PORTS = 1000;

export interface Entry {
  index: number;
  /** container name used in configs: "client", "server", "c<i>" */
  name: string;
  netns: string;
  /** interface inside the container namespace */
  ifname: string;
  /** host-side veth, inside the host namespace */
  hostIf: string;
  ip: string;
  prefixLen: number;
  bridge: string;
  labels: Record<string, string>;
}

export interface TopologyOptions {
  prefix: string;
  /** second octet of the 10.x.0.0/16 used by this run */
  octet: number;
  /**
   * filler container entries per namespace (1 = one namespace per entry).
   * With K > 1 the fillers share namespaces, one veth (eth0..eth<K-1>) each.
   */
  entriesPerNetns?: number;
}

const CONTAINER_SYSCTLS = ['net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'];
/** the measured client opens tens of thousands of short connections */
const CLIENT_SYSCTLS = ['net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024,65535'];

export class Topology {
  readonly prefix: string;
  readonly hostNs: string;
  readonly entries: Entry[] = [];
  readonly bridges: string[] = [];
  private readonly octet: number;
  private readonly perNs: number;
  private readonly namespaces = new Set<string>();
  private created = false;
  nsconfBin = '';

  constructor(opts: TopologyOptions, nsconfBin: string) {
    this.prefix = opts.prefix;
    this.octet = opts.octet;
    this.perNs = Math.max(1, opts.entriesPerNetns ?? 1);
    this.hostNs = `${opts.prefix}h`;
    this.nsconfBin = nsconfBin;
  }

  get client(): Entry {
    return this.entries[0]!;
  }
  get server(): Entry {
    return this.entries[1]!;
  }
  /** number of container network namespaces (not counting the host one) */
  get netnsCount(): number {
    return this.namespaces.size;
  }

  static addressOf(octet: number, index: number): { ip: string; bridge: number; prefixLen: number } {
    const bridge = Math.floor(index / BRIDGE_PORTS);
    const host = (index % BRIDGE_PORTS) + 2;
    const third = bridge * 4 + Math.floor(host / 256);
    return { ip: `10.${octet}.${third}.${host % 256}`, bridge, prefixLen: 22 };
  }

  static gatewayOf(octet: number, bridge: number): string {
    return `10.${octet}.${bridge * 4}.1`;
  }

  /** host namespace and the measured pair */
  async create(): Promise<void> {
    runSync(['ip', 'netns', 'add', this.hostNs]);
    this.created = true;
    this.nsconf([
      `${this.hostNs} lo - net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv4.ip_forward=1`,
    ]);
    this.setBridgeNetfilter(false);
    await this.grow(2);
  }

  /** add entries until there are n */
  async grow(n: number): Promise<void> {
    const start = this.entries.length;
    if (n <= start) return;
    const nsAdds: string[] = [];
    const links: string[] = [];
    const hostLines: string[] = [];
    const conf: string[] = [];
    // bridges first
    const needBridges = Math.floor((n - 1) / BRIDGE_PORTS) + 1;
    for (let b = this.bridges.length; b < needBridges; b++) {
      const br = `${this.prefix}b${b}`;
      hostLines.push(`link add ${br} type bridge`);
      hostLines.push(`addr add ${Topology.gatewayOf(this.octet, b)}/22 dev ${br}`);
      hostLines.push(`link set ${br} up`);
      this.bridges.push(br);
    }
    for (let i = start; i < n; i++) {
      const addr = Topology.addressOf(this.octet, i);
      let netns: string;
      let ifname: string;
      let name: string;
      if (i === 0) {
        netns = `${this.prefix}client`;
        ifname = 'eth0';
        name = 'client';
      } else if (i === 1) {
        netns = `${this.prefix}server`;
        ifname = 'eth0';
        name = 'server';
      } else {
        const k = Math.floor((i - 2) / this.perNs);
        netns = `${this.prefix}n${k}`;
        ifname = `eth${(i - 2) % this.perNs}`;
        name = `c${i}`;
      }
      const firstInNs = !this.namespaces.has(netns);
      if (firstInNs) {
        nsAdds.push(`netns add ${netns}`);
        this.namespaces.add(netns);
      }
      const hostIf = `${this.prefix}v${i}`;
      const bridge = this.bridges[addr.bridge]!;
      links.push(`link add ${hostIf} netns ${this.hostNs} type veth peer name ${ifname} netns ${netns}`);
      hostLines.push(`link set ${hostIf} master ${bridge} up`);
      const sysctls = firstInNs ? [...CONTAINER_SYSCTLS, ...(i === 0 ? CLIENT_SYSCTLS : [])] : [];
      conf.push(`${netns} ${ifname} ${addr.ip}/${addr.prefixLen} ${sysctls.join(' ')}`.trim());
      this.entries.push({
        index: i,
        name,
        netns,
        ifname,
        hostIf,
        ip: addr.ip,
        prefixLen: addr.prefixLen,
        bridge,
        labels: { app: name },
      });
    }
    if (nsAdds.length) await run(['ip', '-b', '-'], { input: nsAdds.join('\n') + '\n', timeoutMs: 600_000 });
    // bridges must exist before veths are enslaved; veths are created from the
    // real host namespace with both ends placed directly where they belong
    const bridgeLines = hostLines.filter((l) => !l.includes(' master '));
    const enslave = hostLines.filter((l) => l.includes(' master '));
    if (bridgeLines.length) await run(inNs(this.hostNs, ['ip', '-b', '-']), { input: bridgeLines.join('\n') + '\n' });
    await run(['ip', '-b', '-'], { input: links.join('\n') + '\n', timeoutMs: 600_000 });
    await run(inNs(this.hostNs, ['ip', '-b', '-']), { input: enslave.join('\n') + '\n', timeoutMs: 600_000 });
    this.nsconf(conf);
  }

  private nsconf(lines: string[]): void {
    runSync([this.nsconfBin], { input: lines.join('\n') + '\n', timeoutMs: 600_000 });
  }

  /** br_netfilter: pass bridged IPv4 through iptables (per namespace) */
  setBridgeNetfilter(on: boolean): void {
    const v = on ? '1' : '0';
    this.nsconf([
      `${this.hostNs} lo - net.bridge.bridge-nf-call-iptables=${v} net.bridge.bridge-nf-call-ip6tables=${v} net.bridge.bridge-nf-call-arptables=${v}`,
    ]);
  }

  /** delete every namespace of this topology (and with them every link, rule, socket) */
  async destroy(): Promise<void> {
    if (!this.created) return;
    const names = [...this.namespaces];
    if (names.length) {
      await run(['ip', '-force', '-b', '-'], {
        input: names.map((n) => `netns del ${n}`).join('\n') + '\n',
        allowFail: true,
        timeoutMs: 600_000,
      });
    }
    await run(['ip', 'netns', 'del', this.hostNs], { allowFail: true });
    this.namespaces.clear();
    this.entries.length = 0;
    this.bridges.length = 0;
    this.created = false;
  }
}

/** Every namespace whose name starts with prefix (for the last-resort cleanup). */
export function namespacesWithPrefix(prefix: string): string[] {
  if (!existsSync('/run/netns')) return [];
  return readdirSync('/run/netns').filter((n) => n.startsWith(prefix));
}

export function destroyPrefixSync(prefix: string): void {
  const names = namespacesWithPrefix(prefix);
  if (!names.length) return;
  runSync(['ip', '-force', '-b', '-'], {
    input: names.map((n) => `netns del ${n}`).join('\n') + '\n',
    allowFail: true,
    timeoutMs: 300_000,
  });
}
