/**
 * Whose from_overlay is on a tunnel device: two Bastion instances (two pin
 * paths) on one host, each with its own programs and maps, and one VXLAN
 * device. The instance whose maps the program reads owns it: the other can
 * neither replace it (ForeignStackError, nothing attached) nor take it off
 * (`down` of the other pin path leaves program and device alone), while a
 * restart of the owner (new programs, same pinned maps) replaces its own,
 * and its own `down` removes program and device.
 *
 * The devices live in the host namespace under unique names, with no
 * address: nothing is sent.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { openDatapath, type DatapathAgent } from '../../src/agent/datapath-agent.js';
import { ensureTunnelDevice } from '../../src/agent/tunnel.js';
import { tearDown } from '../../src/agent/cleanup.js';
import { ForeignStackError } from '../../src/manager/ports.js';
import { uniquePinPath } from '../helpers/bastion-daemon.js';
import { addOtherToolFilter } from '../helpers/netns.js';

const tag = randomBytes(3).toString('hex');
const UNDERLAY = `btu${tag}`;
const DEVICE = `btv${tag}`;

describe('the tunnel program belongs to one instance', () => {
  const pinA = uniquePinPath();
  const pinB = uniquePinPath();
  const open: DatapathAgent[] = [];
  let ifindex = 0;

  before(async () => {
    // an underlay to hang the device on: a veth pair (its peer goes with it)
    execFileSync('ip', ['link', 'add', UNDERLAY, 'type', 'veth', 'peer', 'name', `${UNDERLAY}p`]);
    execFileSync('ip', ['link', 'set', UNDERLAY, 'up']);
    ifindex = (await ensureTunnelDevice(DEVICE, 40000 + Math.floor(Math.random() * 20000), UNDERLAY, 1500)).ifindex;
  });

  after(() => {
    for (const d of open) d.close();
    for (const dev of [DEVICE, UNDERLAY]) {
      try {
        execFileSync('ip', ['link', 'del', dev], { stdio: 'ignore' });
      } catch {
        // gone already (the owner's down removes the device)
      }
    }
    for (const p of [pinA, pinB]) tearDown(p);
  });

  const agent = async (pin: string) => {
    const d = await openDatapath(pin);
    open.push(d);
    return d;
  };
  const deviceExists = () => existsSync(`/sys/class/net/${DEVICE}`);

  it("a second instance neither replaces nor detaches the first one's from_overlay; a restarted owner replaces its own; the owner's down removes both", async () => {
    const a = await agent(pinA);
    const b = await agent(pinB);
    a.attachTunnel(ifindex);
    assert.equal(a.tunnelAttached(ifindex), true);
    assert.equal(b.tunnelAttached(ifindex), false);

    // B (another pin path, say a second cluster node on this host with the same --tunnel-device)
    assert.throws(() => b.attachTunnel(ifindex), (err: unknown) => err instanceof ForeignStackError && err.ownerPinPath === pinA);
    assert.equal(a.tunnelAttached(ifindex), true, "A's program is still there");

    // B's down, with the device recorded in its tunnel map, leaves A's program and the device
    b.maps.tunnel.set({ ifindex, localIpv4: '0.0.0.0', flags: 0 });
    b.close();
    open.splice(open.indexOf(b), 1);
    const rb = tearDown(pinB);
    assert.equal(rb.tunnel, undefined);
    assert.ok(deviceExists(), 'the device stays');
    assert.equal(a.tunnelAttached(ifindex), true, "A's program survives B's down");

    // A restarted: new programs over the same pinned maps take their own slot back
    const a2 = await agent(pinA);
    assert.equal(a2.tunnelAttached(ifindex), false, "the previous run's program is not this run's");
    a2.attachTunnel(ifindex);
    assert.equal(a2.tunnelAttached(ifindex), true);

    // A's down: its program off, its device away
    a2.maps.tunnel.set({ ifindex, localIpv4: '0.0.0.0', flags: 0 });
    for (const d of [a, a2]) {
      d.close();
      open.splice(open.indexOf(d), 1);
    }
    const ra = tearDown(pinA);
    assert.equal(ra.tunnel, DEVICE);
    assert.equal(deviceExists(), false);
  });

  it("from_underlay takes Bastion's slot on the host's interface only when it is free or its own: another instance's or another tool's filter stays; each down removes only its own", async () => {
    const UL = `btw${tag}`;
    execFileSync('ip', ['link', 'add', UL, 'type', 'veth', 'peer', 'name', `${UL}p`]);
    const pins = [uniquePinPath(), uniquePinPath()];
    const filters = () => execFileSync('tc', ['filter', 'show', 'dev', UL, 'ingress'], { encoding: 'utf8' });
    try {
      const ul = Number(execFileSync('cat', [`/sys/class/net/${UL}/ifindex`]).toString().trim());
      const a = await agent(pins[0]!);
      const b = await agent(pins[1]!);
      assert.deepEqual(a.attachUnderlay(ul), { attached: true });
      assert.equal(a.underlayAttached(ul), true);
      // a second node of this host on the same underlay (its own port): A's stays, B goes without
      assert.deepEqual(b.attachUnderlay(ul), { attached: false, owner: 'foreign', pinPath: pins[0] });
      assert.equal(a.underlayAttached(ul), true, "A's from_underlay is still there");
      // B's down (its tunnel entry names the interface) leaves A's
      b.maps.tunnel.set({ ifindex: 0, localIpv4: '0.0.0.0', underlayIfindex: ul, port: 4789, flags: 0 });
      b.close();
      open.splice(open.indexOf(b), 1);
      tearDown(pins[1]!);
      assert.equal(a.underlayAttached(ul), true, "A's from_underlay survives B's down");
      // A's down takes its own off, and only the filter: the qdisc is the host's interface's
      a.maps.tunnel.set({ ifindex: 0, localIpv4: '0.0.0.0', underlayIfindex: ul, port: 4789, flags: 0 });
      a.close();
      open.splice(open.indexOf(a), 1);
      tearDown(pins[0]!);
      assert.doesNotMatch(filters(), /from_underlay/);
      // another tool's BPF filter in Bastion's slot (handle 1, priority 1) is never replaced
      addOtherToolFilter(UL);
      const c = await agent(pins[0]!);
      assert.deepEqual(c.attachUnderlay(ul), { attached: false, owner: 'other' });
      assert.match(filters(), /other_tool/, "the other tool's filter stays");
      assert.doesNotMatch(filters(), /from_underlay/);
    } finally {
      execFileSync('ip', ['link', 'del', UL], { stdio: 'ignore' });
      for (const p of pins) tearDown(p);
    }
  });
});
