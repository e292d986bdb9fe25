/** What every part of a run shares: options, tool paths, where to write, logging. */
import type { ReloadMode } from './bastion.js';
import type { Position } from './deps.js';
import type { ConnOptions, ToolPaths } from './tools.js';

export type ScenarioName = 'loopback' | 'bridge' | 'iptables' | 'bastion';
export const SCENARIOS: ScenarioName[] = ['loopback', 'bridge', 'iptables', 'bastion'];

export interface Options {
  quick: boolean;
  reps: number;
  /** seconds of each iperf3 / sockperf / bbconn measurement */
  seconds: number;
  /** repetitions of the new-connection measurement at each scale point */
  scaleReps: number;
  scaleSeconds: number;
  /** added dependencies measured at each scale point */
  updates: number;
  scale: number[];
  depsPerEntry: number;
  entriesPerNetns: number;
  scenarios: ScenarioName[];
  rulePosition: Position;
  rrProto: 'tcp' | 'udp';
  conn: ConnOptions;
  bastion: boolean;
  bastionReload: ReloadMode;
  /** command that runs the daemon (default: the repository's bin/bastion) */
  bastionCmd: string[] | null;
  /** before each measurement wait (at most quietWaitMs) until other work uses < quietPct of the CPUs */
  quietPct: number;
  quietWaitMs: number;
  /** seconds after which the remaining measurements are skipped (quick mode: 540) */
  budgetS: number;
  outDir: string;
  /** the cross-host scenarios (overlay, overlay-iptables, bastion across two hosts) */
  crossHost: boolean;
  /** only those: no single-host scenarios, no scale series */
  crossHostOnly: boolean;
}

export interface Context {
  opts: Options;
  repo: string;
  tools: ToolPaths;
  prefix: string;
  octet: number;
  /** scratch directory for configs, logs */
  work: string;
  bastion: { available: boolean; note: string };
  /** argv prefix that runs the Bastion CLI */
  bastionCmd: string[];
  notes: string[];
  log: (msg: string) => void;
  /** true once the run has used up opts.budgetS */
  overBudget: () => boolean;
  /** ms left of opts.budgetS (Infinity without a budget) */
  remainingMs: () => number;
}
