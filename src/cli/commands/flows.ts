/**
 * `bastion flows`: the flows the daemon recorded, filtered (src/flows/filter.ts),
 * as lines or NDJSON, live (-f), or read back from a saved file (--input).
 */
import type { Command } from 'commander';
import { socketPathFor } from '../../api/paths.js';
import { apiCall, apiStream, DaemonUnreachable, errorsOf } from '../../api/client.js';
import { formatFlowLine, type FlowRecord } from '../../flows/record.js';
import { filterQuery, FlowFilterError, flowPredicate, parseFlowFilter, type FlowFilterInput } from '../../flows/filter.js';
import { FlowFileError, readFlowFile } from '../../flows/ndjson.js';
import { isErrorBody, isFlowsLost, type FlowStreamLine } from '../../api/types.js';
import { CliError, EXIT } from '../errors.js';
import { colors, parseOutputFormat, yamlText } from '../output.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';

function colourLine(r: FlowRecord): string {
  const line = formatFlowLine(r);
  if (r.verdict === 'DROPPED') return colors.red(line);
  if (r.verdict === 'AUDIT') return colors.yellow(line);
  if (r.verdict === 'ALLOWED') return colors.green(line);
  if (r.verdict === 'REPAIRED') return colors.yellow(line);
  return line;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** The filter flags are FlowFilterInput's fields, by the same names. */
interface FlowsOptions extends FlowFilterInput {
  pinPath: string;
  follow?: boolean;
  input?: string;
  last?: string;
  output: string;
  json?: boolean;
}

function filterInputOf(o: FlowsOptions): FlowFilterInput {
  const input: FlowFilterInput = {};
  if (o.since !== undefined) input.since = o.since;
  if (o.until !== undefined) input.until = o.until;
  for (const k of ['from', 'to', 'container', 'fromLabel', 'toLabel', 'port', 'protocol', 'verdict', 'reason'] as const) {
    if (o[k]?.length) input[k] = o[k];
  }
  return input;
}

export function registerFlows(program: Command): void {
  program
    .command('flows')
    .description('Show flows (drops, allowed connections, audited ones, ARP answers): recent, from the history, live, or from a saved file')
    .addOption(pinPathOption())
    .option('-f, --follow', 'keep streaming new flows (a client that falls behind is told how many it missed)')
    .option('--input <file>', 'read flows from a file written with -o json (or the daemon\'s log, or a history segment; - for stdin) instead of the daemon')
    .option('-n, --last <n>', 'how many of the last matching flows (a number, or all); default 50, or all with --since/--until/--input')
    .option('--since <time>', 'flows at or after: a duration back from now (90s, 10m, 24h, 2d) or an ISO time; reads the history on disk')
    .option('--until <time>', 'flows at or before (same forms as --since)')
    .option('--from <name>', 'flows from this container (repeat for any of several)', collect)
    .option('--to <name>', 'flows to this container (repeatable)', collect)
    .option('--container <name>', 'flows from or to this container (repeatable)', collect)
    .option('--from-label <k=v,...>', 'flows whose source has all these labels (repeatable: all of them)', collect)
    .option('--to-label <k=v,...>', 'flows whose destination has all these labels (repeatable: all of them)', collect)
    .option('--port <n>', 'flows with this source or destination port (repeatable)', collect)
    .option('--protocol <p>', 'tcp, udp, icmp, sctp or arp (repeatable)', collect)
    .option('--verdict <v>', 'ALLOWED, DROPPED, AUDIT, ARP_REPLY or REPAIRED (repeatable)', collect)
    .option('--reason <r>', 'a reason such as policy-denied, host-denied, spoofed-ip (repeatable)', collect)
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
-o json prints one JSON object per line (NDJSON, what --input reads back); -o yaml
one YAML document per flow (separated by ---).

Without --since or --until the daemon answers from the recent flows it holds in
memory (the last 10,000); with them, from its flow history on disk, which
survives restarts (bastion run --flow-history-max-bytes sets its cap).

Examples:
  bastion flows --verdict DROPPED --last 20
  bastion flows --since 1h --from web --port 8080 -o json > web.ndjson
  bastion flows --input web.ndjson --verdict AUDIT
  bastion flows -f --to-label app=db`,
    )
    .action(async (opts: FlowsOptions) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const input = filterInputOf(opts);
      const print = (r: FlowRecord) =>
        process.stdout.write(format === 'table' ? colourLine(r) + '\n' : format === 'json' ? JSON.stringify(r) + '\n' : `---\n${yamlText(r)}`);
      let filter;
      try {
        filter = parseFlowFilter(input, Date.now());
      } catch (err) {
        if (err instanceof FlowFilterError) throw new CliError(err.message, EXIT.usage);
        throw err;
      }
      const windowed = opts.since !== undefined || opts.until !== undefined;
      const last = opts.last ?? (windowed || opts.input ? 'all' : '50');
      if (last !== 'all' && !/^\d+$/.test(last)) throw new CliError(`--last "${last}": expected a number of flows, or all`, EXIT.usage);

      if (opts.input) {
        if (opts.follow) throw new CliError('--follow reads from the daemon; give --input or --follow, not both', EXIT.usage);
        const keep = last === 'all' ? Infinity : Number(last);
        const pred = flowPredicate(filter);
        const ring: FlowRecord[] = [];
        try {
          for await (const r of readFlowFile(opts.input)) {
            if (!pred(r)) continue;
            if (keep === Infinity) print(r);
            else {
              ring.push(r);
              if (ring.length > keep) ring.shift();
            }
          }
        } catch (err) {
          if (err instanceof FlowFileError) throw new CliError(err.message, EXIT.invalid);
          throw err;
        }
        for (const r of ring) print(r);
        return;
      }

      const q = filterQuery(input);
      q.set('last', last);
      const socket = socketPathFor(opts.pinPath);
      const unreachable = (err: unknown) =>
        err instanceof DaemonUnreachable ? new CliError(`${err.message} (is "bastion run" running with --pin-path ${opts.pinPath}?)`, EXIT.notReady) : err;
      if (opts.follow) {
        q.set('follow', '1');
        try {
          await apiStream(socket, `/v1/flows?${q}`, (text) => {
            const line = JSON.parse(text) as FlowStreamLine;
            if (!isFlowsLost(line)) return print(line);
            // this client fell behind the daemon, which skipped records for it (json: the line as the API sends it)
            process.stdout.write(
              format === 'table' ? colors.yellow(`EVENTS LOST: ${line.count} flows skipped (this client fell behind)`) + '\n' : format === 'json' ? text + '\n' : `---\n${yamlText(line)}`,
            );
          });
        } catch (err) {
          throw unreachable(err);
        }
        return;
      }
      let r: Awaited<ReturnType<typeof apiCall<FlowRecord[]>>>;
      try {
        r = await apiCall<FlowRecord[]>(socket, 'GET', `/v1/flows?${q}`, undefined, 120_000);
      } catch (err) {
        throw unreachable(err);
      }
      if (r.status !== 200 || isErrorBody(r.body) || !Array.isArray(r.body)) throw new CliError(errorsOf(r.status, r.body).join('\n'), r.status === 400 ? EXIT.usage : EXIT.failure);
      for (const rec of r.body) print(rec);
    });
}
