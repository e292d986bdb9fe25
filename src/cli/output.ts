/** Output helpers shared by commands: -o json|yaml|table, colour only on a terminal. */
import pc from 'picocolors';
import { stringify as toYaml } from 'yaml';
import { CliError, EXIT } from './errors.js';

export type OutputFormat = 'table' | 'json' | 'yaml';

/** The format of -o (and --json); an unknown one is a usage error (exit 2). */
export function parseOutputFormat(value: string | undefined, json?: boolean): OutputFormat {
  if (json) return 'json';
  if (value === undefined || value === 'table') return 'table';
  if (value === 'json' || value === 'yaml') return value;
  throw new CliError(`unknown output format "${value}" (use table, json or yaml)`, EXIT.usage);
}

export function printData(data: unknown, format: OutputFormat, table: () => string): void {
  if (format === 'json') process.stdout.write(JSON.stringify(data, bigintSafe, 2) + '\n');
  else if (format === 'yaml') process.stdout.write(yamlText(data));
  else process.stdout.write(table());
}

/** YAML of plain data (bigints as numbers). */
export function yamlText(data: unknown): string {
  return toYaml(JSON.parse(JSON.stringify(data, bigintSafe)));
}

function bigintSafe(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? Number(v) : v;
}

/** Colours that switch themselves off when stdout is not a terminal or NO_COLOR is set. */
export const colors = pc.createColors(Boolean(process.stdout.isTTY) && !process.env.NO_COLOR);

/** A plain aligned text table. */
export function formatTable(headers: string[], rows: string[][]): string {
  // a loop, not Math.max(...column): 250,000 rows as arguments overflow the stack
  const widths = headers.map((h) => h.length);
  for (const r of rows) for (let i = 0; i < widths.length; i++) widths[i] = Math.max(widths[i]!, (r[i] ?? '').length);
  const line = (cells: string[]) => cells.map((c, i) => (c ?? '').padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}
