import type { Command } from 'commander';
import { DEFAULT_PIN_PATH } from '../../datapath/layout.js';
import { socketPathFor } from '../../api/paths.js';
import { apiRequest, apiStream } from '../../api/client.js';
import { formatFlowLine, type FlowRecord } from '../../agent/flow-log.js';
import { isFlowsLost, type FlowStreamLine } from '../../api/types.js';
import { colors, parseOutputFormat } from '../output.js';

function colourLine(r: FlowRecord): string {
  const line = formatFlowLine(r);
  if (r.verdict === 'DROPPED') return colors.red(line);
  if (r.verdict === 'AUDIT') return colors.yellow(line);
  if (r.verdict === 'ALLOWED') return colors.green(line);
  if (r.verdict === 'REPAIRED') return colors.yellow(line);
  return line;
}

export function registerFlows(program: Command): void {
  program
    .command('flows')
    .description('Show recent flows (drops, allowed connections, ARP answers), or follow them live')
    .option('--pin-path <dir>', 'bpffs directory of the instance', DEFAULT_PIN_PATH)
    .option('-f, --follow', 'keep streaming new flows (a client that falls behind is told how many it missed)')
    .option('--verdict <verdict>', 'only DROPPED, ALLOWED, AUDIT, ARP_REPLY or REPAIRED (drift the daemon put right)')
    .option('--container <name>', 'only flows to or from this container')
    .option('-n, --last <n>', 'how many recent flows', '50')
    .option('-o, --output <format>', 'table or json (one JSON object per line)', 'table')
    .option('--json', 'same as -o json')
    .action(async (opts: { pinPath: string; follow?: boolean; verdict?: string; container?: string; last: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const q = new URLSearchParams({ limit: opts.last });
      if (opts.verdict) q.set('verdict', opts.verdict);
      if (opts.container) q.set('container', opts.container);
      const print = (r: FlowRecord) => process.stdout.write((format === 'table' ? colourLine(r) : JSON.stringify(r)) + '\n');
      const socket = socketPathFor(opts.pinPath);
      if (opts.follow) {
        q.set('follow', '1');
        await apiStream(socket, `/v1/flows?${q}`, (text) => {
          const line = JSON.parse(text) as FlowStreamLine;
          if (!isFlowsLost(line)) return print(line);
          // this client fell behind the daemon, which skipped records for it (json: the line as the API sends it)
          process.stdout.write((format === 'table' ? colors.yellow(`EVENTS LOST: ${line.count} flows skipped (this client fell behind)`) : text) + '\n');
        });
        return;
      }
      for (const r of await apiRequest<FlowRecord[]>(socket, 'GET', `/v1/flows?${q}`)) print(r);
    });
}
