/**
 * `bastion policy`: runtime policies, next to the config file's.
 *
 *   bastion policy add NAME --from app=web --to app=api --ports 8080/tcp
 *   bastion policy add -f policies.yaml          (a `policies:` document; - for stdin)
 *   bastion policy list [-o json|yaml]
 *   bastion policy delete NAME...
 *
 * A runtime policy is applied as a delta (only the containers it selects are
 * recompiled), validated exactly like the config file's policies, kept across
 * daemon restarts, and forgotten by `bastion down`.
 */
import { Option, type Command } from 'commander';
import { readFileSync } from 'node:fs';
import { Document as YamlDocument, type YAMLSeq } from 'yaml';
import { formatBytes, readInputFile } from '../../policy/input-file.js';
import { POLICIES_DOCUMENT_MAX_BYTES } from '../../daemon/runtime-policies.js';
import { socketPathFor } from '../../api/paths.js';
import { apiCall, DaemonUnreachable, errorsOf } from '../../api/client.js';
import { isErrorBody, type Done, type ErrorBody, type PolicyAddResult, type PolicyChange, type PolicyDeleteResult, type PolicyRow } from '../../api/types.js';
import { CliError, EXIT } from '../errors.js';
import { parseLabelAssignment } from '../../policy/selector.js';
import { colors, formatTable, parseOutputFormat, printData } from '../output.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';


/**
 * One end of an inline policy: "host", a CIDR ("10.0.0.0/8"), "all" (every
 * managed container), or labels "app=web,tier=front". Returned in the
 * document form, so the daemon validates it like a config file entry.
 */
export function parsePolicyEnd(flag: string, v: string): unknown {
  const t = v.trim();
  if (t === 'host') return 'host';
  if (t === 'all' || t === '*') return {};
  if (/^[0-9.]+\/\d+$/.test(t) || /^[0-9a-fA-F:]+\/\d+$/.test(t)) return { cidr: t };
  const labels: Record<string, string> = {};
  for (const part of t.split(',')) {
    const label = parseLabelAssignment(part);
    if (!label) throw new CliError(`${flag} "${v}": expected host, all, a CIDR, or labels such as app=web,tier=front`, EXIT.usage);
    const key = label.key.trim();
    if (key in labels) throw new CliError(`${flag} "${v}": label ${key} given twice`, EXIT.usage);
    labels[key] = label.value.trim();
  }
  return labels;
}

async function call<T>(pinPath: string, method: string, path: string, body?: string): Promise<T> {
  let r: { status: number; body: T | ErrorBody };
  try {
    r = await apiCall<T>(socketPathFor(pinPath), method, path, body);
  } catch (err) {
    if (err instanceof DaemonUnreachable) throw new CliError(`${err.message} (is "bastion run" running with --pin-path ${pinPath}?)`, EXIT.notReady);
    throw err;
  }
  if (r.status !== 200 || isErrorBody(r.body)) {
    throw new CliError(`nothing applied:\n  ${errorsOf(r.status, r.body).join('\n  ')}`, exitCodeFor(r.status, r.body));
  }
  return r.body;
}

/**
 * The exit code of a refused request: a document that does not validate,
 * is too large, or names a config-file policy is invalid input (3); an
 * unknown name, a stopping daemon, a failure to apply are failures (1).
 */
export function exitCodeFor(status: number, body: unknown): number {
  const code = isErrorBody(body) ? body.error.code : status === 422 ? 'invalid' : status === 409 ? 'conflict' : status === 413 ? 'too-large' : undefined;
  return code === 'invalid' || code === 'conflict' || code === 'too-large' ? EXIT.invalid : EXIT.failure;
}

/**
 * The listed policies as a `policies:` document, the form `policy add -f`
 * reads (as with `kubectl get -o yaml`); where each comes from, and when
 * it was added, go in comments.
 */
export function policiesDocumentYaml(rows: PolicyRow[]): string {
  const doc = new YamlDocument({ policies: rows.map((r) => r.spec) });
  const seq = doc.get('policies') as YAMLSeq;
  rows.forEach((r, i) => {
    const item = seq.items[i] as { commentBefore?: string };
    item.commentBefore =
      r.source === 'file' ? ' source: the config file (change it there)' : r.source === 'platform' ? ' source: the platform (a published port)' : ` source: ${r.source}${r.added ? `, added ${r.added}` : ''}`;
  });
  return doc.toString();
}

export function registerPolicy(program: Command): void {
  const policy = program
    .command('policy')
    .description('Add, list and delete runtime policies (applied at once, as a delta, next to the config file\'s)');

  policy
    .command('add')
    .description('Add or replace runtime policies: one given inline, or a `policies:` document (-f)')
    .argument('[name]', 'policy name (inline form)')
    .option('--from <end>', 'inline: who opens the connections: labels (app=web,tier=x), all, host, or a CIDR')
    .option('--to <end>', 'inline: who receives them: labels, all, host, or a CIDR')
    .option('--ports <spec...>', 'inline: 8080/tcp, 9000-9010/udp, tcp, icmp ... (default: every protocol and port)')
    .option('-f, --filename <file>', 'a YAML or JSON document with a policies: list, as in the config file (- for stdin)')
    .option('--dry-run', 'let the daemon validate the policies and say what would change, without changing anything')
    .addOption(pinPathOption())
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
A policy with the name of an existing runtime policy replaces it. Names of the
config file's policies are refused: change those in the file.

Examples:
  bastion policy add web-to-api --from app=web --to app=api --ports 8080/tcp
  bastion policy add api-to-host --from app=api --to host --ports 53/udp
  bastion policy add -f extra-policies.yaml
  bastion policy add -f extra-policies.yaml --dry-run`,
    )
    .action(async (name: string | undefined, opts: { from?: string; to?: string; ports?: string[]; filename?: string; dryRun?: boolean; pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      let body: string;
      let source: string;
      if (opts.filename) {
        if (name || opts.from || opts.to || opts.ports) throw new CliError('give either -f FILE or NAME --from --to [--ports], not both', EXIT.usage);
        source = opts.filename === '-' ? 'stdin' : opts.filename;
        if (opts.filename === '-') {
          body = readFileSync(0, 'utf8');
          if (Buffer.byteLength(body) > POLICIES_DOCUMENT_MAX_BYTES)
            throw new CliError(`stdin: refused: over the limit of ${formatBytes(POLICIES_DOCUMENT_MAX_BYTES)} for a policies document`, EXIT.invalid);
        } else {
          // a regular file of a trusted owner, no larger than the API takes
          body = readInputFile(opts.filename, { maxBytes: POLICIES_DOCUMENT_MAX_BYTES });
        }
      } else {
        if (!name || !opts.from || !opts.to) throw new CliError('give NAME --from END --to END [--ports SPEC...], or -f FILE', EXIT.usage);
        const p = {
          name,
          from: parsePolicyEnd('--from', opts.from),
          to: parsePolicyEnd('--to', opts.to),
          ...(opts.ports ? { ports: opts.ports.flatMap((x) => x.split(',')).filter(Boolean) } : {}),
        };
        body = JSON.stringify({ policies: [p] });
        source = 'command line';
      }
      const r = await call<Done<PolicyAddResult>>(opts.pinPath, 'POST', `/v1/policies?source=${encodeURIComponent(source)}${opts.dryRun ? '&dryRun=1' : ''}`, body);
      const line = (p: PolicyChange) =>
        p.action === 'unchanged'
          ? `policy ${p.name} unchanged (the config file's, as the file has it)\n`
          : 'entries' in r
            ? `policy ${p.name} ${p.action} (${r.entries} map entries changed in ${r.ms} ms)\n`
            : `policy ${p.name} would be ${p.action} (dry run: nothing changed)\n`;
      printData(r, format, () => r.policies.map(line).join(''));
    });

  policy
    .command('list')
    .alias('ls')
    .description("List every policy in force: the config file's and the runtime ones")
    .addOption(pinPathOption())
    .addOption(new Option('--source <source>', "only the config file's (file), the runtime ones (api), or the platform's (platform: published ports)").choices(['file', 'api', 'platform']))
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
-o yaml prints a policies document that "bastion policy add -f" reads back
(policies identical to the config file's are left as they are):
  bastion policy list --source api -o yaml > runtime.yaml
  bastion policy add -f runtime.yaml`,
    )
    .action(async (opts: { pinPath: string; source?: PolicyRow['source']; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const rows = (await call<PolicyRow[]>(opts.pinPath, 'GET', '/v1/policies')).filter((p) => !opts.source || p.source === opts.source);
      if (format === 'yaml') {
        process.stdout.write(policiesDocumentYaml(rows));
        return;
      }
      printData(rows, format, () =>
        formatTable(
          ['NAME', 'SOURCE', 'FROM', 'TO', 'PORTS'],
          rows.map((p) => [p.name, p.source === 'api' ? colors.cyan('api') : p.source, p.from, p.to, p.ports]),
        ),
      );
    });

  policy
    .command('delete')
    .alias('rm')
    .description('Delete runtime policies (all of the names, or none if one is unknown)')
    .argument('<names...>', 'policy names')
    .addOption(pinPathOption())
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .action(async (names: string[], opts: { pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const q = new URLSearchParams(names.map((n) => ['name', n]));
      const r = await call<Done<PolicyDeleteResult>>(opts.pinPath, 'DELETE', `/v1/policies?${q}`);
      printData(r, format, () => names.map((n) => `policy ${n} deleted\n`).join(''));
    });
}
