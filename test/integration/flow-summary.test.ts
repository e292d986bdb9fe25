/**
 * The allowed-flow summary read (DatapathAgent.summarizeFlows) on the real
 * pinned maps: every key whose count moved becomes one summary, what was
 * reported is remembered in bastion_flow_seen across a restart of the
 * reader, keys the kernel evicted are forgotten, and a full read of
 * thousands of keys leaves the event loop free (it is read in batches: the
 * key-by-key walk it replaced held the loop for the whole map, 24 ms at
 * 5,000 keys, every 5 s on a host with new connections). The keys are
 * written here as the programs would write them; no traffic is needed.
 * The pin path is unique and removed afterwards.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { openDatapath, type DatapathAgent } from '../../src/agent/datapath-agent.js';
import { removePinDir } from '../../src/datapath/bpffs.js';
import { encodeFlowSum, encodeFlowSumKey, type FlowEvent } from '../../src/datapath/layout.js';

const KEYS = 5000;
const pin = `/sys/fs/bpf/bastion-test-fsum-${randomBytes(3).toString('hex')}`;

const key = (i: number) => encodeFlowSumKey({ srcId: 256 + (i % 100), dstId: 1000 + Math.floor(i / 100), dport: 8000 + i, proto: 6, flags: 0 });
const value = (i: number, count: number) =>
  encodeFlowSum({ firstNs: 1_000_000n + BigInt(i), lastNs: 2_000_000n + BigInt(i), count: BigInt(count), saddr: '10.9.0.1', daddr: '10.9.0.2', sport: 40000, reason: 0, trace: 0, ifindex: 7, ruleId: 1, ingressRuleId: 2 });

/** a reader as a restarted daemon opens it: it has read nothing yet */
async function reader(): Promise<{ agent: DatapathAgent; summaries: FlowEvent[] }> {
  const agent = await openDatapath(pin);
  const summaries: FlowEvent[] = [];
  agent.onEvent((ev) => {
    if (ev.flowSummary) summaries.push(ev);
  });
  return { agent, summaries };
}

/** the longest the event loop went without a turn while `work` ran (a 1 ms ticker) */
async function longestHold<T>(work: () => Promise<T>): Promise<{ result: T; holdMs: number }> {
  let last = performance.now();
  let holdMs = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    holdMs = Math.max(holdMs, now - last);
    last = now;
  }, 1);
  try {
    const result = await work();
    holdMs = Math.max(holdMs, performance.now() - last);
    return { result, holdMs };
  } finally {
    clearInterval(ticker);
  }
}

describe('allowed-flow summaries (bastion_flow_sum, bastion_flow_seen) on the real maps', () => {
  const agents: DatapathAgent[] = [];
  after(() => {
    for (const a of agents) a.close();
    removePinDir(pin);
  });

  it(`reports ${KEYS} keys once each, in batches that leave the event loop free`, async (t) => {
    const { agent, summaries } = await reader();
    agents.push(agent);
    const sum = agent.maps.flowSum.raw;
    for (let i = 0; i < KEYS; i++) sum.update(key(i), value(i, 3));
    const t0 = performance.now();
    const { result, holdMs } = await longestHold(() => agent.summarizeFlows());
    t.diagnostic(`read ${KEYS} keys in ${(performance.now() - t0).toFixed(0)} ms, the event loop held ${holdMs.toFixed(1)} ms at most (the key-by-key walk before: 187 ms at once)`);
    assert.equal(result, KEYS);
    assert.equal(summaries.length, KEYS);
    assert.ok(summaries.every((s) => s.flowSummary!.count === 3), 'each key: the 3 connections no event reported');
    assert.equal(new Set(summaries.map((s) => `${s.srcId}>${s.dstId}:${s.dport}`)).size, KEYS, 'no key twice');
    assert.equal([...agent.maps.flowSeen.raw.keys()].length, KEYS, 'what was reported is remembered');
    // the whole read is 100-140 ms here; its longest stretch 5-10 ms (a young-generation collection of this test process among them)
    assert.ok(holdMs < 40, `the event loop was held ${holdMs.toFixed(1)} ms at once`);
  });

  it('a restarted reader reports nothing twice; a count that moved is reported by what it moved; evicted keys are forgotten', async () => {
    const first = agents.pop()!;
    first.close();
    const again = await reader();
    agents.push(again.agent);
    assert.equal(await again.agent.summarizeFlows(), 0, 'everything was reported before the restart');

    const sum = again.agent.maps.flowSum.raw;
    for (let i = 0; i < 100; i++) sum.delete(key(i)); // evicted by the kernel (LRU)
    for (let i = 100; i < 110; i++) sum.update(key(i), value(i, 5)); // two more connections each
    again.agent.close();
    agents.pop();
    const third = await reader();
    agents.push(third.agent);
    assert.equal(await third.agent.summarizeFlows(), 10);
    assert.deepEqual(
      third.summaries.map((s) => s.flowSummary!.count),
      Array.from({ length: 10 }, () => 2),
    );
    assert.equal([...third.agent.maps.flowSeen.raw.keys()].length, KEYS - 100, 'the evicted keys left bastion_flow_seen');
  });
});
