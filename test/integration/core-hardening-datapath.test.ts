/**
 * Issue 13, the datapath's holes, each tried on the plain bridge first (the
 * baseline: what the attack does without Bastion) and then with Bastion:
 *
 * - forged ICMP errors carrying a live tuple, from a third container;
 * - the host reached through directed broadcast addresses under a world rule;
 * - a new host address taken for the world until the next poll;
 * - one container's flood of allowed new connections evicting another's idle
 *   connection from conntrack.
 *
 * The core lab's web, api, db and attacker namespaces on one bridge; packets
 * are forged with scapy (python3-scapy) and hping3.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { CoreLab, bastionStatus, type PolicyEntry } from '../helpers/bastion-daemon.js';
import { nsRun, sleep, startBackground, startCapture, startUdpEcho, waitFor, type Background } from '../helpers/probes.js';
import { freeSubnet24 } from '../helpers/netns.js';
import { metricValue, metricsText } from '../helpers/metrics.js';

/** The system's python3 (Debian's python3-scapy lives there, not in a pyenv on PATH). */
const PYTHON = '/usr/bin/python3';

/** Runs a python3 program in a namespace (null: the host). */
function py(ns: string | null, code: string, timeoutMs = 20_000) {
  return nsRun(ns, PYTHON, ['-c', code], { timeoutMs });
}
function pyBackground(ns: string | null, code: string): Background {
  return startBackground(ns, PYTHON, ['-u', '-c', code]);
}

/** A connected UDP socket in web to api:port, bound to sport: prints "ready", then "refused" if an ICMP error reaches it within waitS. */
const connectedUdp = (web: string, api: string, sport: number, port: number, waitS: number) => `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("${web}", ${sport}))
s.connect(("${api}", ${port}))
s.settimeout(2)
s.send(b"hello"); s.recv(100)
print("ready", flush=True)
end = time.time() + ${waitS}
s.settimeout(0.2)
while time.time() < end:
    try:
        s.send(b"ping"); s.recv(100)
    except ConnectionRefusedError:
        print("refused", flush=True); raise SystemExit(0)
    except socket.timeout:
        pass
    time.sleep(0.05)
print("no-error", flush=True)
`;

/** scapy: an ICMP error from src to dst (L2: srcMac -> dstMac on eth0) about UDP inner.src:sport -> inner.dst:dport, 400 bytes of payload. */
const forgeIcmpError = (o: { srcMac: string; dstMac: string; src: string; dst: string; type: number; code: number; mtu?: number }, inner: { src: string; dst: string; sport: number; dport: number }) => `
from scapy.all import Ether, IP, ICMP, UDP, Raw, sendp, conf
conf.verb = 0
icmp = ICMP(type=${o.type}, code=${o.code}${o.mtu ? `, nexthopmtu=${o.mtu}` : ''})
p = Ether(src="${o.srcMac}", dst="${o.dstMac}")/IP(src="${o.src}", dst="${o.dst}")/icmp/IP(src="${inner.src}", dst="${inner.dst}")/UDP(sport=${inner.sport}, dport=${inner.dport})/Raw(b"A"*400)
sendp(p, iface="eth0", count=3, inter=0.05)
`;

/** A UDP socket on the host bound to 0.0.0.0:port: one line per datagram, "<monotonic ns> <source ip> <payload>". */
const hostListener = (port: number) => `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", ${port}))
print("listening", flush=True)
while True:
    d, a = s.recvfrom(2000)
    print(time.monotonic_ns(), a[0], d.decode(errors="replace"), flush=True)
`;

describe('issue 13: datapath holes, baseline then Bastion', () => {
  let lab: CoreLab;
  const UDP_PORT = randomInt(9200, 9300);
  const WORLD_PORT = randomInt(19000, 19500);
  const ICMP_SPORT = 45000 + randomInt(0, 1000);
  let otherNet: string; // a second subnet on the bridge, for its broadcast address
  let listener: Background;
  const extra = (): PolicyEntry[] => [
    { name: 'web-udp-to-api', from: { app: 'web' }, to: { app: 'api' }, ports: [`${UDP_PORT}/udp`] },
    { name: 'web-to-world', from: { app: 'web' }, to: { cidr: '0.0.0.0/0' }, ports: [`${WORLD_PORT}/udp`] },
    { name: 'attacker-to-web', from: { app: 'attacker' }, to: { app: 'web' }, ports: ['8080-8084/tcp'] },
  ];
  const received = (): string[] => listener.stdout.split('\n').filter((l) => /^\d+ /.test(l));

  before(async () => {
    lab = await CoreLab.create();
    otherNet = await freeSubnet24();
    const r = await nsRun(null, 'ip', ['addr', 'add', `${otherNet}.1/24`, 'dev', lab.topo.bridge], { timeoutMs: 5000 });
    assert.equal(r.code, 0, r.stderr);
    await startUdpEcho(lab.api.netns, lab.api.ip, UDP_PORT);
    listener = pyBackground(null, hostListener(WORLD_PORT));
    assert.ok(await waitFor(() => listener.stdout.includes('listening'), 5000), `host listener: ${listener.stderr}`);
  });

  after(async () => {
    await lab?.cleanup();
  });

  /** web's connected UDP socket to api and attacker's forged port-unreachable; true when web's socket saw ECONNREFUSED. */
  async function forgedRefusal(): Promise<boolean> {
    const { web, api, attacker } = lab;
    const victim = pyBackground(web.netns, connectedUdp(web.ip, api.ip, ICMP_SPORT, UDP_PORT, 3));
    assert.ok(await waitFor(() => /ready|Error/.test(victim.stdout + victim.stderr), 8000), `web's UDP socket: ${victim.stdout} ${victim.stderr}`);
    const f = await py(attacker.netns, forgeIcmpError({ srcMac: attacker.mac, dstMac: web.mac, src: attacker.ip, dst: web.ip, type: 3, code: 3 }, { src: web.ip, dst: api.ip, sport: ICMP_SPORT, dport: UDP_PORT }));
    assert.equal(f.code, 0, `scapy: ${f.stderr}`);
    await victim.exited;
    return victim.stdout.includes('refused');
  }

  /** attacker's forged frag-needed (MTU 552); returns web's path MTU to api afterwards (undefined: none cached). */
  async function forgedPmtu(): Promise<number | undefined> {
    const { web, api, attacker } = lab;
    await nsRun(web.netns, 'ip', ['route', 'flush', 'cache']);
    const victim = pyBackground(web.netns, connectedUdp(web.ip, api.ip, ICMP_SPORT + 1, UDP_PORT, 1.5));
    assert.ok(await waitFor(() => victim.stdout.includes('ready'), 8000), `web's UDP socket: ${victim.stderr}`);
    const f = await py(attacker.netns, forgeIcmpError({ srcMac: attacker.mac, dstMac: web.mac, src: attacker.ip, dst: web.ip, type: 3, code: 4, mtu: 552 }, { src: web.ip, dst: api.ip, sport: ICMP_SPORT + 1, dport: UDP_PORT }));
    assert.equal(f.code, 0, `scapy: ${f.stderr}`);
    await victim.exited;
    const r = await nsRun(web.netns, 'ip', ['route', 'get', api.ip]);
    const m = /mtu (\d+)/.exec(r.stdout);
    return m ? Number(m[1]) : undefined;
  }

  /** web sends one datagram to WORLD_PORT at each address, to the gateway's MAC; returns the host listener lines that came of it. */
  async function broadcastsFromWeb(addrs: string[]): Promise<string[]> {
    const before = received().length;
    const { web } = lab;
    const code = `
from scapy.all import Ether, IP, UDP, Raw, sendp, conf
conf.verb = 0
for a in ${JSON.stringify(addrs)}:
    sendp(Ether(src="${web.mac}", dst="${lab.topo.bridgeMac}")/IP(src="${web.ip}", dst=a)/UDP(sport=40000, dport=${WORLD_PORT})/Raw(("to " + a).encode()), iface="eth0", count=2, inter=0.05)
`;
    const r = await py(web.netns, code);
    assert.equal(r.code, 0, r.stderr);
    await sleep(500);
    return received().slice(before);
  }

  /**
   * Fragments from web to api (scapy, straight to api's MAC), captured on
   * api's eth0. First an allowed datagram (to UDP_PORT, IP id `id`, 480-byte
   * fragments), then a denied one with the same IP id (to port 9, 1000-byte
   * fragments: its later fragments are 1020 and 928 bytes long, which is how
   * the capture tells them apart); then `outOfOrder` allowed datagrams with
   * fresh ids, sent last fragment first (600-byte fragments, 620 bytes on
   * the wire). Returns the denied datagram's later fragments that reached
   * api, and per out-of-order datagram how many of its fragments did.
   */
  async function fragmentTrial(id: number, outOfOrder: number): Promise<{ leaked: number; outOfOrderLater: number }> {
    const { web, api } = lab;
    const cap = await startCapture(api.netns, 'eth0', 'ip[6:2] & 0x1fff != 0 and (ip[2:2] == 1020 or ip[2:2] == 928 or ip[2:2] == 620 or ip[2:2] == 618)', { promisc: false, maxMs: 30_000 });
    const code = `
from scapy.all import Ether, IP, UDP, Raw, sendp, fragment, conf
import time
conf.verb = 0
eth = Ether(src="${web.mac}", dst="${api.mac}")
def send(frags):
    for f in frags:
        sendp(eth/f, iface="eth0")
        time.sleep(0.02)
send(fragment(IP(src="${web.ip}", dst="${api.ip}", id=${id})/UDP(sport=41000, dport=${UDP_PORT})/Raw(b"A"*1400), fragsize=480))
send(fragment(IP(src="${web.ip}", dst="${api.ip}", id=${id})/UDP(sport=41000, dport=9)/Raw(b"B"*2900), fragsize=1000))
for i in range(${outOfOrder}):
    send(list(reversed(fragment(IP(src="${web.ip}", dst="${api.ip}", id=${id} + 1 + i)/UDP(sport=41000, dport=${UDP_PORT})/Raw(b"C"*1790), fragsize=600))))
`;
    const r = await py(web.netns, code, 30_000);
    assert.equal(r.code, 0, r.stderr);
    await sleep(300);
    const { packets } = await cap.stop();
    // tcpdump -e: "..., ethertype IPv4 (0x0800), length FRAME: ..." (frame = IP length + 14)
    const frameLen = (l: string) => Number(/length (\d+):/.exec(l)?.[1]);
    return {
      leaked: packets.filter((l) => [1034, 942].includes(frameLen(l))).length,
      outOfOrderLater: packets.filter((l) => [634, 632].includes(frameLen(l))).length,
    };
  }

  const subnetBroadcast = (): string => `${lab.gateway.split('.').slice(0, 3).join('.')}.255`;

  it('baseline: a third container\'s forged ICMP errors refuse web\'s UDP socket and cut its path MTU; broadcasts reach the host', { timeout: 60_000 }, async () => {
    assert.equal(await forgedRefusal(), true, 'without Bastion the forged port-unreachable reaches web');
    assert.equal(await forgedPmtu(), 552, 'without Bastion the forged frag-needed sets the path MTU');
    // (Not the network address: the host routes it back onto the bridge, and its
    // "host unreachable" three seconds later would land in the next test.)
    const got = await broadcastsFromWeb([subnetBroadcast(), `${otherNet}.255`, '127.0.0.1', '0.0.0.0']);
    console.log(`# baseline, datagrams to the gateway's MAC that reached a host socket bound to 0.0.0.0: ${got.map((l) => l.split(' ').slice(2).join(' ')).join(', ')}`);
    assert.ok(got.some((l) => l.includes(`to ${subnetBroadcast()}`)), `directed broadcast ${subnetBroadcast()} reached the host socket: ${got.join(' | ')}`);
    assert.ok(got.some((l) => l.includes(`to ${otherNet}.255`)), `other subnet's broadcast reached the host socket: ${got.join(' | ')}`);
    await nsRun(lab.web.netns, 'ip', ['route', 'flush', 'cache']);
    const frags = await fragmentTrial(7000 + randomInt(0, 1000), 3);
    console.log(`# baseline fragments: ${frags.leaked} later fragments of the denied datagram and ${frags.outOfOrderLater} out-of-order later fragments reached api`);
    assert.equal(frags.leaked, 2, 'without Bastion every fragment reaches api');
    assert.equal(frags.outOfOrderLater, 6);
  });

  it('the daemon starts with the core config, web→api UDP, a world rule for web and attacker→web', { timeout: 60_000 }, async () => {
    await lab.startDaemon(lab.config({ extra: extra() }));
    await lab.pinNeighbours();
  });

  it('forged ICMP errors from a third container never reach web; each drop is an icmp-unrelated flow event', { timeout: 60_000 }, async () => {
    const d = lab.requireDaemon();
    const mark = d.mark();
    assert.equal(await forgedRefusal(), false, 'the forged port-unreachable reached web through Bastion');
    assert.equal(await forgedPmtu(), undefined, 'the forged frag-needed changed the path MTU through Bastion');
    // and towards the host: the attacker has no host rule
    const h = await py(lab.attacker.netns, forgeIcmpError({ srcMac: lab.attacker.mac, dstMac: lab.topo.bridgeMac, src: lab.attacker.ip, dst: lab.gateway, type: 3, code: 3 }, { src: lab.web.ip, dst: lab.api.ip, sport: ICMP_SPORT, dport: UDP_PORT }));
    assert.equal(h.code, 0, h.stderr);
    const ev = await d.waitForRecord((r) => r.reason === 'icmp-unrelated' && r.dst?.ip === lab.gateway, 3000, mark);
    assert.ok(ev, `an icmp-unrelated event for the error towards the host\n${d.describe(20)}`);
    const toWeb = d.flows(mark).filter((r) => r.reason === 'icmp-unrelated' && r.dst?.ip === lab.web.ip);
    assert.ok(toWeb.length >= 2, `icmp-unrelated events for the errors to web: ${toWeb.length}`);
    const others = toWeb.filter((r) => r.verdict !== 'DROPPED' || r.src?.name !== 'attacker');
    assert.deepEqual(others, [], 'icmp-unrelated events towards web from another source');
  });

  it('fragments: a denied datagram\'s later fragments never borrow the verdict of an allowed one with the same IP id; out-of-order later fragments are dropped, every time', { timeout: 60_000 }, async () => {
    const d = lab.requireDaemon();
    const mark = d.mark();
    for (let run = 0; run < 3; run++) {
      const frags = await fragmentTrial(20000 + run * 100 + randomInt(0, 50), 3);
      assert.equal(frags.leaked, 0, `run ${run}: ${frags.leaked} later fragments of the denied datagram reached api`);
      assert.equal(frags.outOfOrderLater, 0, `run ${run}: out-of-order later fragments reached api`);
    }
    assert.ok(d.flows(mark).some((r) => r.reason === 'fragment' && r.src?.name === 'web'), 'fragment drops are flow events');
    assert.ok(d.flows(mark).some((r) => r.reason === 'policy-denied' && r.dst?.port === 9), 'the denied first fragment');
  });

  it('a world rule does not open the host: directed broadcasts of its subnets, 127/8 and 0.0.0.0 are the host, and host-denied', { timeout: 30_000 }, async () => {
    const d = lab.requireDaemon();
    const mark = d.mark();
    const hostOwn = [subnetBroadcast(), `${otherNet}.255`, '127.0.0.1', '127.1.2.3', '0.0.0.0'];
    // The network address is no local address (the kernel routes it, it does not deliver it): whatever it is, nothing reaches a host socket.
    const network = `${lab.gateway.split('.').slice(0, 3).join('.')}.0`;
    const got = await broadcastsFromWeb([...hostOwn, network]);
    assert.deepEqual(got, [], 'a datagram reached the host socket through Bastion');
    const denied = d.flows(mark).filter((r) => r.reason === 'host-denied' && r.dst?.name === 'host');
    for (const a of hostOwn) assert.ok(denied.some((r) => r.dst.ip === a), `host-denied for ${a}: ${JSON.stringify(d.flows(mark).slice(-5))}`);
  });

  it('a new host address is the host at once: nothing reaches it later than 200 ms after it appears', { timeout: 60_000 }, async () => {
    const d = lab.requireDaemon();
    const net = await freeSubnet24();
    const addr = `${net}.1`;
    // Until the address exists, the host drops what is sent to it (never forwarded anywhere).
    assert.equal((await nsRun(null, 'ip', ['route', 'add', 'blackhole', `${net}.0/24`])).code, 0);
    try {
      const sender = pyBackground(lab.web.netns, `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 4
while time.time() < end:
    try: s.sendto(str(time.monotonic_ns()).encode(), ("${addr}", ${WORLD_PORT}))
    except OSError: pass
    time.sleep(0.005)
`);
      await sleep(1000);
      const before = received().length;
      const mark = d.mark();
      const add = await nsRun(null, 'ip', ['addr', 'add', `${addr}/32`, 'dev', lab.topo.bridge]);
      const t0 = process.hrtime.bigint();
      assert.equal(add.code, 0, add.stderr);
      await sender.exited;
      const late = received()
        .slice(before)
        .map((l) => l.split(' '))
        .filter(([, src]) => src === lab.web.ip)
        .map(([t]) => Number(BigInt(t!) - t0) / 1e6);
      console.log(`# new host address ${addr}: ${late.length} datagrams reached it, the last ${late.length ? Math.max(...late).toFixed(1) : '-'} ms after it appeared`);
      assert.ok(late.every((ms) => ms <= 200), `datagrams reached the new address up to ${Math.max(...late).toFixed(0)} ms after it appeared`);
      assert.ok(d.flows(mark).some((r) => r.reason === 'host-denied' && r.dst?.ip === addr), 'host-denied events for the new address');
    } finally {
      await nsRun(null, 'ip', ['addr', 'del', `${addr}/32`, 'dev', lab.topo.bridge]);
      await nsRun(null, 'ip', ['route', 'del', 'blackhole', `${net}.0/24`]);
    }
  });

  it("one container's flood of allowed new connections does not evict another's idle connection; the flooder hits its share (ct-limit)", { timeout: 90_000 }, async () => {
    const d = lab.requireDaemon();
    const { api, db, attacker, web } = lab;
    // api holds an idle connection to db:5432; after the flood db speaks first
    // (a push), which needs the connection's conntrack entry: without it, db's
    // packet is a new connection db -> api, which no policy allows.
    const server = pyBackground(db.netns, `
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("${db.ip}", 5432)); l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
print("accepted", flush=True)
sys.stdin.readline()
c.send(b"push")
print("pushed", flush=True)
c.recv(10)
`);
    assert.ok(await waitFor(() => server.stdout.includes('listening'), 5000), `db's server: ${server.stderr}`);
    const client = pyBackground(api.netns, `
import socket
s = socket.create_connection(("${db.ip}", 5432), timeout=5)
print("connected", flush=True)
s.settimeout(15)
try:
    print("got:" + s.recv(100).decode(), flush=True)
except Exception as e:
    print("failed:" + repr(e), flush=True)
s.close()
`);
    assert.ok(await waitFor(() => client.stdout.includes('connected') && server.stdout.includes('accepted'), 8000), `api's client: ${client.stderr} ${server.stderr}`);
    const t0 = Date.now();
    const floods = await Promise.all(
      [8080, 8081, 8082, 8083, 8084].map((p) => nsRun(attacker.netns, 'timeout', ['8', 'hping3', '-q', '-S', '-p', String(p), '--flood', web.ip], { timeoutMs: 15_000 })),
    );
    const ms = Date.now() - t0;
    const st = await bastionStatus(lab.pinPath);
    const sent = floods.map((f) => Number(/(\d+) packets transmitted/.exec(f.stdout + f.stderr)?.[1] ?? 0)).reduce((a, b) => a + b, 0);
    console.log(`# flood: ${sent} SYNs in ${ms} ms; conntrack ${JSON.stringify(st.json?.conntrack)}; attacker holds ${st.json?.endpoints?.find((e: any) => e.name === 'attacker')?.conntrack}; ct-limit drops ${st.json?.counters?.['ct-limit']?.packets ?? 0}`);
    server.child.stdin!.write('\n');
    await client.exited;
    assert.match(client.stdout, /got:push/, `api's idle connection to db did not survive the flood: db's push never arrived: ${client.stdout} ${client.stderr}\n${d.describe(10)}`);
    const limit = st.json.conntrack.perEndpointLimit as number;
    const att = st.json.endpoints.find((e: any) => e.name === 'attacker');
    assert.ok(att.conntrack <= limit + 8, `attacker holds ${att.conntrack} entries, its share is ${limit}`);
    assert.ok((st.json.counters['ct-limit']?.packets ?? 0) > 0, 'the flood went past the share and was refused (ct-limit)');
    assert.ok(st.json.conntrack.entries < st.json.conntrack.capacity, 'the table is not full');
    // the same figures as metrics
    const m = await metricsText(lab.pinPath);
    assert.equal(metricValue(m, 'bastion_conntrack_capacity'), st.json.conntrack.capacity);
    assert.equal(metricValue(m, 'bastion_conntrack_endpoint_limit'), limit);
    assert.ok((metricValue(m, 'bastion_conntrack_entries') ?? 0) >= att.conntrack);
    assert.ok((metricValue(m, 'bastion_conntrack_endpoint_entries', 'endpoint="attacker"') ?? 0) >= limit - 8, 'per-endpoint entries as a metric');
    assert.ok((metricValue(m, 'bastion_datapath_packets_total', 'reason="ct-limit",verdict="drop"') ?? 0) > 0);
  });
});
