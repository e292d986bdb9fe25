/** Output helpers shared by commands: -o json|yaml|table, colour only on a terminal. */
import pc from 'picocolors';
import { stringify as toYaml } from 'yaml';

export type OutputFormat = 'table' | 'json' | 'yaml';

export function parseOutputFormat(value: string | undefined, json?: boolean): OutputFormat {
  if (json) return 'json';
  if (value === undefined || value === 'table' || value === 'wide') return 'table';
  if (value === 'json' || value === 'yaml') return value;
  throw new Error(`unknown output format "${value}" (use json, yaml or table)`);
}

export function printData(data: unknown, format: OutputFormat, table: () => string): void {
  if (format === 'json') process.stdout.write(JSON.stringify(data, bigintSafe, 2) + '\n');
  else if (format === 'yaml') process.stdout.write(toYaml(JSON.parse(JSON.stringify(data, bigintSafe))));
  else process.stdout.write(table());
}

function bigintSafe(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? Number(v) : v;
}

/** Colours that switch themselves off when stdout is not a terminal or NO_COLOR is set. */
export const colors = pc.createColors(Boolean(process.stdout.isTTY) && !process.env.NO_COLOR);

/** A plain aligned text table. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (c ?? '').padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}
