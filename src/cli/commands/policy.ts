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
import { addClusterOptions, withCluster, type ClusterFlags } from './cluster-options.js';
import { addClusterPolicies, deleteClusterPolicies, listClusterPolicies } from '../../cluster/policies.js';
import { parsePoliciesDocument } from '../../policy/policy-document.js';
import { policyKey } from '../../cluster/keys.js';
import type { StatusReport, VerifyAnswer } from '../../api/types.js';
import { formatFlowLine } from '../../flows/record.js';
import { FlowFileError, readFlowFile } from '../../flows/ndjson.js';
import { matchesFlow, parseTimePoint, type FlowFilter } from '../../flows/filter.js';
import { loadCandidate } from '../../learn/candidate.js';
import { Replayer, type ReplayResult } from '../../learn/replay.js';
import { diffReachability, type ReachContainer } from '../../learn/reachability.js';
import { selectOf } from './learn.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

async function candidateRules(path: string) {
  const c = await loadCandidate(path);
  if (!c.ok) throw new CliError(`invalid policies:\n  ${c.errors.join('\n  ')}`, EXIT.invalid);
  return c;
}

async function readRecording(file: string, filter: FlowFilter, each: (r: import('../../flows/record.js').FlowRecord) => void): Promise<void> {
  try {
    for await (const r of readFlowFile(file)) if (matchesFlow(filter, r)) each(r);
  } catch (err) {
    if (err instanceof FlowFileError) throw new CliError(err.message, EXIT.invalid);
    throw err;
  }
}

function sinceFilter(since: string | undefined): FlowFilter {
  if (!since) return {};
  try {
    return { since: parseTimePoint(since, '--since', Date.now()) };
  } catch (err) {
    throw new CliError((err as Error).message, EXIT.usage);
  }
}

function verifyReport(r: VerifyAnswer | ReplayResult, candidate: string): string {
  const lines: string[] = [];
  const n = (x: number, one: string, many: string) => `${x} ${x === 1 ? one : many}`;
  if (r.ok) lines.push(colors.green(`PASS: ${candidate} allows every one of the ${n(r.replayed, 'flow', 'flows')} replayed that went through`));
  else {
    const flows = r.wouldDrop.reduce((a, f) => a + (f.count ?? 1), 0);
    lines.push(colors.red(`FAIL: ${candidate} would drop ${n(flows, 'flow', 'flows')} that went through (${n(r.wouldDrop.length, 'kind', 'kinds')}), of ${r.replayed} replayed:`));
    for (const f of r.wouldDrop) lines.push(`  ${formatFlowLine(f)}${f.count && f.count > 1 ? '' : ''}${f.deniedBy ? `  (refused by the candidate's ${f.deniedBy})` : ''}`);
  }
  if (r.newlyAllowed.length) {
    lines.push(colors.yellow(`${n(r.newlyAllowed.length, 'kind of flow', 'kinds of flows')} dropped before would now be allowed:`));
    for (const f of r.newlyAllowed) lines.push(`  ${formatFlowLine(f)}`);
  }
  const skipped = Object.entries(r.skipped ?? {});
  if (skipped.length) lines.push(colors.dim(`not replayed: ${skipped.map(([k, v]) => `${v} ${k}`).join(', ')}`));
  return lines.join('\n') + '\n';
}


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

async function call<T>(pinPath: string, method: string, path: string, body?: string, failed = 'nothing applied:'): Promise<T> {
  let r: { status: number; body: T | ErrorBody };
  try {
    r = await apiCall<T>(socketPathFor(pinPath), method, path, body);
  } catch (err) {
    if (err instanceof DaemonUnreachable) throw new CliError(`${err.message} (is "bastion run" running with --pin-path ${pinPath}?)`, EXIT.notReady);
    throw err;
  }
  if (r.status !== 200 || isErrorBody(r.body)) {
    throw new CliError(`${failed}\n  ${errorsOf(r.status, r.body).join('\n  ')}`, exitCodeFor(r.status, r.body));
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

  addClusterOptions(policy
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
    .addOption(jsonOption()), 'store the policies in the cluster (every node enforces them), not in one daemon')
    .addHelpText(
      'after',
      `
A policy with the name of an existing runtime policy replaces it. Names of the
config file's policies are refused: change those in the file.

Examples:
  bastion policy add web-to-api --from app=web --to app=api --ports 8080/tcp
  bastion policy add api-to-host --from app=api --to host --ports 53/udp
  bastion policy add -f extra-policies.yaml
  bastion policy add -f extra-policies.yaml --dry-run
  bastion policy add web-to-db --from app=web --to app=db --ports 5432/tcp \\
    --cluster https://10.0.0.5:2379 --cluster-ca ca.pem --cluster-cert admin.pem --cluster-key admin-key.pem`,
    )
    .action(async (name: string | undefined, opts: ClusterFlags & { from?: string; to?: string; ports?: string[]; filename?: string; dryRun?: boolean; pinPath: string; output: string; json?: boolean }) => {
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
      if (opts.cluster) {
        await addToCluster(opts, body, source, format);
        return;
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

  addClusterOptions(policy
    .command('list')
    .alias('ls')
    .description("List every policy in force: the config file's and the runtime ones (the cluster's, with --cluster)")
    .addOption(pinPathOption())
    .addOption(new Option('--source <source>', "only the config file's (file), the runtime ones (api), or the platform's (platform: published ports)").choices(['file', 'api', 'platform', 'cluster']))
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption()), "list the cluster's policies")
    .addHelpText(
      'after',
      `
-o yaml prints a policies document that "bastion policy add -f" reads back
(policies identical to the config file's are left as they are):
  bastion policy list --source api -o yaml > runtime.yaml
  bastion policy add -f runtime.yaml`,
    )
    .action(async (opts: ClusterFlags & { pinPath: string; source?: PolicyRow['source']; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const all = opts.cluster ? await withCluster(opts, listClusterPolicies) : await call<PolicyRow[]>(opts.pinPath, 'GET', '/v1/policies');
      const rows = all.filter((p) => !opts.source || p.source === opts.source);
      if (format === 'yaml') {
        process.stdout.write(policiesDocumentYaml(rows));
        return;
      }
      const modes = rows.some((p) => p.mode);
      printData(rows, format, () =>
        formatTable(
          ['NAME', 'SOURCE', 'FROM', 'TO', 'PORTS', ...(modes ? ['MODE'] : [])],
          rows.map((p) => [p.name, p.source === 'api' ? colors.cyan('api') : p.source, p.from, p.to, p.ports, ...(modes ? [p.mode === 'audit' ? colors.yellow('audit') : (p.mode ?? '')] : [])]),
        ),
      );
    });

  policy
    .command('verify')
    .description('Replay recorded flows against candidate policies (the real compiler and evaluator): exit 0 when every flow that went through is allowed, 1 otherwise')
    .argument('<candidate>', 'a policies document (bastion learn writes one) or a config file; - for stdin')
    .option('--flows <file>', 'the recording: a file of flows (bastion flows -o json); without it, the daemon\'s flow history')
    .option('--since <time>', 'only flows since: a duration back from now (24h) or an ISO time')
    .option('--select <k=v,...>', 'only flows with a container of these labels at either end (repeatable, all must match)', collect)
    .option('--container <name>', 'only flows with this container at either end (repeatable)', collect)
    .addOption(pinPathOption())
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
A flow "went through" when it was ALLOWED, or AUDIT (passed in audit mode although
the policy in force would drop it). Flows the candidate would drop are listed
(exit 1); flows that were dropped and would now be allowed are listed too.

Examples:
  bastion policy verify web.yaml --flows week.ndjson --select app=web
  bastion policy verify web.yaml --since 24h --container web`,
    )
    .action(async (candidate: string, opts: { flows?: string; since?: string; select?: string[]; container?: string[]; pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const select = selectOf(opts.select);
      const scope = { ...(select ? { select } : {}), ...(opts.container?.length ? { containers: opts.container } : {}) };
      let result: VerifyAnswer | ReplayResult;
      if (opts.flows) {
        const c = await candidateRules(candidate);
        const replayer = new Replayer(scope);
        await readRecording(opts.flows, sinceFilter(opts.since), (r) => replayer.add(r));
        result = replayer.judge(c.rules);
      } else {
        let text: string;
        try {
          text = readFileSync(candidate === '-' ? 0 : candidate, 'utf8');
        } catch (err) {
          throw new CliError(`${candidate}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, EXIT.invalid);
        }
        const body = JSON.stringify({ candidate: text, ...(opts.since ? { since: opts.since } : {}), ...scope });
        result = await call<Done<VerifyAnswer>>(opts.pinPath, 'POST', '/v1/verify', body, 'cannot verify:');
      }
      printData(result, format, () => verifyReport(result, candidate === '-' ? 'the candidate' : candidate));
      if (!result.ok) process.exitCode = EXIT.failure;
    });

  policy
    .command('diff')
    .description('The difference in reachability between two policy sets: which containers may newly reach which ends and ports, and which no longer')
    .argument('<a>', 'the policies before (a policies document or a config file)')
    .argument('<b>', 'the policies after')
    .option('--flows <file>', 'the containers (names, labels, addresses) of this recording; without it, the daemon\'s containers')
    .option('--exit-code', 'exit 1 when the two differ')
    .addOption(pinPathOption())
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
Every pair of ends is judged by the real compiler and evaluator on every port
range the two sets could disagree on: containers, the host, one address in each
prefix the sets name, and the world.

Examples:
  bastion policy diff current.yaml learned.yaml
  bastion policy diff a.yaml b.yaml --flows week.ndjson -o json`,
    )
    .action(async (a: string, b: string, opts: { flows?: string; exitCode?: boolean; pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const [ca, cb] = [await candidateRules(a), await candidateRules(b)];
      let containers: ReachContainer[];
      if (opts.flows) {
        const byName = new Map<string, ReachContainer>();
        await readRecording(opts.flows, {}, (r) => {
          for (const e of [r.src, r.dst]) {
            if (e.identity >= 256 && e.name && Object.keys(e.labels ?? {}).length) byName.set(e.name, { name: e.name, ipv4: e.ip, labels: e.labels });
          }
        });
        containers = [...byName.values()];
      } else {
        const st = await call<StatusReport>(opts.pinPath, 'GET', '/v1/status', undefined, 'cannot read the daemon\'s containers:');
        containers = st.endpoints.map((e) => ({ name: e.name, ipv4: e.ipv4, labels: e.labels }));
      }
      const d = diffReachability(ca.rules, cb.rules, containers, []);
      printData(d, format, () => {
        if (!d.added.length && !d.removed.length) return `no difference in reachability between ${a} and ${b} (${containers.length} containers)\n`;
        const rows = [
          ...d.added.map((p) => colors.green(`+ ${p.from} -> ${p.to} ${p.ports.join(',')}`)),
          ...d.removed.map((p) => colors.red(`- ${p.from} -> ${p.to} ${p.ports.join(',')}`)),
        ];
        return `--- ${a}\n+++ ${b}\n${rows.join('\n')}\n`;
      });
      if (opts.exitCode && (d.added.length || d.removed.length)) process.exitCode = EXIT.failure;
    });

  addClusterOptions(policy
    .command('delete')
    .alias('rm')
    .description("Delete runtime policies, or the cluster's with --cluster (all of the names, or none if one is unknown)")
    .argument('<names...>', 'policy names')
    .addOption(pinPathOption())
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption()), "delete from the cluster's policies")
    .action(async (names: string[], opts: ClusterFlags & { pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      if (opts.cluster) {
        const r = await withCluster(opts, (c) => deleteClusterPolicies(c, names));
        if (!r.ok) throw new CliError(`nothing deleted: no cluster policy ${r.missing.map((n) => `"${n}"`).join(', ')}`, EXIT.failure);
        printData({ ok: true, deleted: names }, format, () => names.map((n) => `policy ${n} deleted from the cluster\n`).join(''));
        return;
      }
      const q = new URLSearchParams(names.map((n) => ['name', n]));
      const r = await call<Done<PolicyDeleteResult>>(opts.pinPath, 'DELETE', `/v1/policies?${q}`);
      printData(r, format, () => names.map((n) => `policy ${n} deleted\n`).join(''));
    });
}

/** `policy add --cluster`: validated here, stored whole in the cluster (or, dry run, only validated and compared). */
async function addToCluster(opts: ClusterFlags & { dryRun?: boolean }, body: string, source: string, format: ReturnType<typeof parseOutputFormat>): Promise<void> {
  if (opts.dryRun) {
    const parsed = parsePoliciesDocument(body, source);
    if (!parsed.ok) throw new CliError(`nothing applied:\n  ${parsed.errors.join('\n  ')}`, EXIT.invalid);
    const actions = await withCluster(opts, (c) =>
      Promise.all(parsed.policies.map(async (p) => ({ name: p.name, action: (await c.get(policyKey(p.name)).exec()).kvs.length ? 'replaced' : 'created' }))),
    );
    printData({ ok: true, dryRun: true, policies: actions }, format, () => actions.map((a) => `policy ${a.name} would be ${a.action} in the cluster (dry run: nothing changed)\n`).join(''));
    return;
  }
  const r = await withCluster(opts, (c) => addClusterPolicies(c, body, source));
  if (!r.ok) throw new CliError(`nothing applied:\n  ${r.errors.join('\n  ')}`, EXIT.invalid);
  printData({ ok: true, policies: r.changes }, format, () => r.changes.map((p) => `policy ${p.name} ${p.action} in the cluster\n`).join(''));
}
