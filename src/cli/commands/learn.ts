/**
 * `bastion learn`: the least-privilege policies the recorded flows imply,
 * from the daemon's flow history (--since) or a saved file (--flows).
 * The logic is src/learn/learn.ts, the same in both cases.
 */
import type { Command } from 'commander';
import { socketPathFor } from '../../api/paths.js';
import { apiCall, DaemonUnreachable, errorsOf } from '../../api/client.js';
import { isErrorBody, type Done, type LearnAnswer, type LearnRequest } from '../../api/types.js';
import { Learner } from '../../learn/learn.js';
import { FlowFileError, readFlowFile } from '../../flows/ndjson.js';
import { FlowFilterError, matchesFlow, parseLabelFilter, parseTimePoint, type FlowFilter } from '../../flows/filter.js';
import { CliError, EXIT } from '../errors.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';
import { colors } from '../output.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

interface LearnOptions {
  since?: string;
  flows?: string;
  select?: string[];
  container?: string[];
  mergePorts?: boolean;
  namePrefix?: string;
  pinPath: string;
  output: string;
  json?: boolean;
}

/** --select app=web --select tier=front (or app=web,tier=front): every label must match. */
export function selectOf(values: string[] | undefined): Record<string, string> | undefined {
  if (!values?.length) return undefined;
  try {
    return Object.assign({}, ...values.map((v) => parseLabelFilter(v, '--select')));
  } catch (err) {
    if (err instanceof FlowFilterError) throw new CliError(err.message, EXIT.usage);
    throw err;
  }
}

export function registerLearn(program: Command): void {
  program
    .command('learn')
    .description('Write the policies that allow exactly what was observed: from the daemon\'s flow history, or a saved file of flows')
    .option('--since <time>', 'learn from the flows since: a duration back from now (24h, 7d) or an ISO time (default: the whole history)')
    .option('--flows <file>', 'learn from this file of flows (bastion flows -o json, a history segment; - for stdin) instead of the daemon')
    .option('--select <k=v,...>', 'learn only for workloads with these labels (at either end of a flow); repeatable, all must match', collect)
    .option('--container <name>', 'learn only for this container (at either end); repeatable', collect)
    .option('--merge-ports', 'one policy per pair of workloads with all its ports, instead of one per port')
    .option('--name-prefix <prefix>', 'prefix of the policy names (offline only; the daemon uses learned-)', 'learned-')
    .addOption(pinPathOption())
    .addOption(outputOption(['yaml', 'json']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
The document is valid input for "bastion policy add -f" as it is. Workloads are
selected by stable labels only (Compose service, your labels, the container
name), never by ids, replica numbers or hashes; the host is "host", outside
addresses are /32 CIDR rules; DNS to a resolver gets 53/udp and 53/tcp.
Check it before you apply it: bastion policy verify FILE --flows RECORDING.

Examples:
  bastion learn --since 24h --select app=web > web.yaml
  bastion flows --since 7d -o json > week.ndjson && bastion learn --flows week.ndjson --merge-ports`,
    )
    .action(async (opts: LearnOptions) => {
      const format = opts.json ? 'json' : opts.output;
      if (format !== 'yaml' && format !== 'json') throw new CliError(`-o ${format}: learned policies are printed as yaml or json`, EXIT.usage);
      const select = selectOf(opts.select);
      let answer: Pick<LearnAnswer, 'document' | 'yaml' | 'flows'> & { warnings?: string[] };
      if (opts.flows) {
        let filter: FlowFilter = {};
        try {
          if (opts.since) filter = { since: parseTimePoint(opts.since, '--since', Date.now()) };
        } catch (err) {
          throw new CliError((err as Error).message, EXIT.usage);
        }
        const learner = new Learner({
          ...(select ? { select } : {}),
          ...(opts.container?.length ? { containers: opts.container } : {}),
          ...(opts.mergePorts ? { mergePorts: true } : {}),
          namePrefix: opts.namePrefix ?? 'learned-',
        });
        try {
          for await (const r of readFlowFile(opts.flows)) if (matchesFlow(filter, r)) learner.add(r);
        } catch (err) {
          if (err instanceof FlowFileError) throw new CliError(err.message, EXIT.invalid);
          throw err;
        }
        answer = learner.result();
      } else {
        const body: LearnRequest = {
          ...(select ? { select } : {}),
          ...(opts.container?.length ? { containers: opts.container } : {}),
          ...(opts.since ? { since: opts.since } : {}),
          ...(opts.mergePorts ? { mergePorts: true } : {}),
        };
        let r: { status: number; body: unknown };
        try {
          r = await apiCall<Done<LearnAnswer>>(socketPathFor(opts.pinPath), 'POST', '/v1/learn', JSON.stringify(body), 300_000);
        } catch (err) {
          if (err instanceof DaemonUnreachable) throw new CliError(`${err.message} (is "bastion run" running with --pin-path ${opts.pinPath}? Or give --flows FILE)`, EXIT.notReady);
          throw err;
        }
        if (r.status !== 200 || isErrorBody(r.body)) throw new CliError(errorsOf(r.status, r.body).join('\n'), r.status === 422 ? EXIT.usage : EXIT.failure);
        answer = r.body as LearnAnswer;
      }
      for (const w of answer.warnings ?? []) process.stderr.write(colors.yellow(`warning: ${w}`) + '\n');
      const n = answer.document.policies.length;
      process.stderr.write(`learned ${n} polic${n === 1 ? 'y' : 'ies'} from ${answer.flows} flow record${answer.flows === 1 ? '' : 's'}\n`);
      process.stdout.write(format === 'json' ? JSON.stringify(answer.document, null, 2) + '\n' : answer.yaml);
    });
}
