import type { Command } from 'commander';

/** Every command module exports register(program). Add new ones here. */
const modules: Array<(program: Command) => void> = [];
import { registerK8s } from './k8s.js'; modules.push(registerK8s);
import { registerCompose } from './compose.js'; modules.push(registerCompose);

export function registerCommands(program: Command): void {
  for (const register of modules) register(program);
}
