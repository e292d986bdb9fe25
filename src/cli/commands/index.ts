import type { Command } from 'commander';
import { registerRun } from './run.js';
import { registerStatus } from './status.js';
import { registerFlows } from './flows.js';
import { registerDown } from './down.js';
import { registerDemo } from './demo.js';
import { registerK8s } from './k8s.js';
import { registerCompose } from './compose.js';
import { registerPolicy } from './policy.js';
import { registerCluster } from './cluster.js';
import { registerAudit } from './audit.js';
import { registerLearn } from './learn.js';
import { registerMode } from './mode.js';
import { registerUi } from './ui.js';

/** Every command module exports register(program), in the order --help lists them. */
const modules: Array<(program: Command) => void> = [registerRun, registerStatus, registerFlows, registerLearn, registerMode, registerPolicy, registerCluster, registerUi, registerDown, registerDemo, registerK8s, registerCompose, registerAudit];

export function registerCommands(program: Command): void {
  for (const register of modules) register(program);
}
