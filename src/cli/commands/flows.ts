import type { Command } from 'commander';
import { Option } from 'commander';
import { socketPathFor } from '../../api/paths.js';
import { apiRequest, apiStream } from '../../api/client.js';
import { formatFlowLine, type FlowRecord } from '../../agent/flow-log.js';
import { VERDICT_NAMES } from '../../datapath/layout.js';
import { isFlowsLost, type FlowStreamLine } from '../../api/types.js';
import { colors, parseOutputFormat, yamlText } from '../output.js';
import { integerArg, jsonOption, oneOfArg, outputOption, pinPathOption } from '../options.js';

function colourLine(r: FlowRecord): string {
  const line = formatFlowLine(r);
  if (r.verdict === 'DROPPED') return colors.red(line);
  if (r.verdict === 'AUDIT') return colors.yellow(line);
  if (r.verdict === 'ALLOWED') return colors.green(line);
  return line;
}

export function registerFlows(program: Command): void {
  const verdicts = Object.values(VERDICT_NAMES);
  program
    .command('flows')
    .description('Show recent flows (drops, allowed connections, ARP answers), or follow them live')
    .addOption(pinPathOption())
    .option('-f, --follow', 'keep streaming new flows (a client that falls behind is told how many it missed)')
    .addOption(new Option('--verdict <verdict>', `only ${verdicts.join(', ')} (any case)`).argParser(oneOfArg(verdicts)))
    .option('--container <name>', 'only flows to or from this container')
    .addOption(new Option('-n, --last <n>', 'how many recent flows (the daemon keeps the last 10,000)').argParser(integerArg(0)).default(50))
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText('after', '\n-o json prints one JSON object per line; -o yaml one YAML document per flow (separated by ---).')
    .action(async (opts: { pinPath: string; follow?: boolean; verdict?: string; container?: string; last: number; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const q = new URLSearchParams({ limit: String(opts.last) });
      if (opts.verdict) q.set('verdict', opts.verdict);
      if (opts.container) q.set('container', opts.container);
      const print = (r: FlowRecord) =>
        process.stdout.write(format === 'table' ? colourLine(r) + '\n' : format === 'json' ? JSON.stringify(r) + '\n' : `---\n${yamlText(r)}`);
      const socket = socketPathFor(opts.pinPath);
      if (opts.follow) {
        q.set('follow', '1');
        await apiStream(socket, `/v1/flows?${q}`, (text) => {
          const line = JSON.parse(text) as FlowStreamLine;
          if (!isFlowsLost(line)) return print(line);
          // this client fell behind the daemon, which skipped records for it (json: the line as the API sends it)
          process.stdout.write(
            format === 'table' ? colors.yellow(`EVENTS LOST: ${line.count} flows skipped (this client fell behind)`) + '\n' : format === 'json' ? text + '\n' : `---\n${yamlText(line)}`,
          );
        });
        return;
      }
      for (const r of await apiRequest<FlowRecord[]>(socket, 'GET', `/v1/flows?${q}`, 60_000)) print(r);
    });
}
