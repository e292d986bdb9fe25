/**
 * The iptables baseline, built the way Docker (icc=false plus allowed links)
 * and iptables-based CNIs build it, inside the benchmark's host namespace with
 * br_netfilter passing bridged traffic through FORWARD:
 *
 *   FORWARD  -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT   (replies, established flows)
 *   FORWARD  -j BB-DEPS                                            (one ACCEPT per dependency)
 *   FORWARD  -j DROP                                               (everything else)
 *   BB-DEPS  -s SRC/32 -d DST/32 -p PROTO -m PROTO --dport PORT -j ACCEPT   x (N x 10 + 4)
 *
 * Rules are loaded at once with iptables-restore; an added dependency is
 * appended to BB-DEPS with one `iptables -A` (as Docker appends to its DOCKER
 * chain), which is the cheapest way iptables offers to add a rule.
 */
import type { Dep } from './deps.js';
import { inNs, run, runSync, type RunResult } from './exec.js';

export const DEPS_CHAIN = 'BB-DEPS';

export function ruleFor(dep: Dep, ipOf: (index: number) => string): string {
  return `-s ${ipOf(dep.src)}/32 -d ${ipOf(dep.dst)}/32 -p ${dep.proto} -m ${dep.proto} --dport ${dep.port} -j ACCEPT`;
}

/** iptables-restore input for the whole filter table */
export function renderRuleset(deps: Dep[], ipOf: (index: number) => string): string {
  const lines = [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    `:${DEPS_CHAIN} - [0:0]`,
    '-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    `-A FORWARD -j ${DEPS_CHAIN}`,
    '-A FORWARD -j DROP',
  ];
  for (const d of deps) lines.push(`-A ${DEPS_CHAIN} ${ruleFor(d, ipOf)}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

export const EMPTY_RULESET = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', 'COMMIT', ''].join('\n');

export async function loadRuleset(hostNs: string, text: string): Promise<RunResult> {
  return run(inNs(hostNs, ['iptables-restore', '-w']), { input: text, timeoutMs: 600_000 });
}

export async function clearRuleset(hostNs: string): Promise<void> {
  await run(inNs(hostNs, ['iptables-restore', '-w']), { input: EMPTY_RULESET, allowFail: true });
}

export function appendRuleArgs(hostNs: string, dep: Dep, ipOf: (index: number) => string): string[] {
  return inNs(hostNs, ['iptables', '-w', '-A', DEPS_CHAIN, ...ruleFor(dep, ipOf).split(' ')]);
}

export function iptablesVersion(): string {
  const r = runSync(['iptables', '-V'], { allowFail: true });
  return r.stdout.trim() || r.stderr.trim();
}

export async function countRules(hostNs: string): Promise<number> {
  const r = await run(inNs(hostNs, ['iptables-save', '-t', 'filter']), { allowFail: true, timeoutMs: 120_000 });
  return r.stdout.split('\n').filter((l) => l.startsWith(`-A ${DEPS_CHAIN} `)).length;
}
