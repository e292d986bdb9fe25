import type { Command } from 'commander';

/** Every command module exports register(program). Add new ones here. */
const modules: Array<(program: Command) => void> = [];

export function registerCommands(program: Command): void {
  for (const register of modules) register(program);
}
