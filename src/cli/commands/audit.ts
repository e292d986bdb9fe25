/**
 * `bastion audit`: what undermines container isolation on this Docker host
 * and in Kubernetes objects (src/audit), as a table, JSON or SARIF 2.1.0.
 *
 *   bastion audit [--docker] [--k8s FILES...] [--config FILE] [-o table|json|sarif] [--fail-on SEVERITY]
 */
import type { Command } from 'commander';
import { CliError, EXIT } from '../errors.js';
import { colors, printData } from '../output.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';

interface AuditCliOptions {
  docker?: boolean;
  k8s?: string[];
  config?: string;
  output: string;
  json?: boolean;
  failOn: string;
  pinPath: string;
}

const FORMATS = ['table', 'json', 'yaml', 'sarif'] as const;

export function registerAudit(program: Command): void {
  program
    .command('audit')
    .description('Find what undermines container isolation: Docker engine and containers, Bastion coverage, Kubernetes objects')
    .option('--docker', 'audit the Docker engine and its running containers (the default when nothing else is named)')
    .option('--k8s <files...>', 'audit Kubernetes objects from YAML or JSON files (Namespaces, Pods, NetworkPolicies, ServiceAccounts, Roles, ClusterRoles, bindings)')
    .option('--config <file>', "a Bastion config file: audit its policies and use them for coverage (default: the running daemon's)")
    .addOption(outputOption(FORMATS))
    .addOption(jsonOption())
    .option('--fail-on <severity>', 'exit 1 when a finding is at least this severe: critical, high, medium, low, info, or none', 'none')
    .addOption(pinPathOption('bpffs directory of the instance whose daemon is asked'))
    .addHelpText(
      'after',
      '\nEvery finding has an id, a severity, the object, what an attacker gains, the evidence, the fix and,\n' +
        'where one exists, the CIS Docker / Kubernetes Benchmark item. docs/audit.md lists every check.\n\n' +
        'Exit status: 0 done (no finding at or above --fail-on), 1 a finding at or above --fail-on (or the\n' +
        'Docker engine cannot be reached), 2 usage, 3 invalid input (config file, Kubernetes objects).',
    )
    .action(async (o: AuditCliOptions) => {
      const format = o.json ? 'json' : o.output;
      if (!(FORMATS as readonly string[]).includes(format)) throw new CliError(`-o ${format}: use table, json, yaml or sarif`, EXIT.usage);
      const { isSeverity, atLeast } = await import('../../audit/findings.js');
      if (o.failOn !== 'none' && !isSeverity(o.failOn)) {
        throw new CliError(`--fail-on ${o.failOn}: use critical, high, medium, low, info or none`, EXIT.usage);
      }
      if (o.k8s !== undefined && o.k8s.length === 0) throw new CliError('--k8s needs at least one file', EXIT.usage);
      const docker = o.docker || (!o.k8s && !o.config);
      const { runAudit, AuditInputError } = await import('../../audit/audit.js');
      const { DockerUnreachable } = await import('../../audit/docker-collect.js');
      let report;
      try {
        report = await runAudit({
          docker,
          ...(o.k8s ? { k8sFiles: o.k8s } : {}),
          ...(o.config ? { configPath: o.config } : {}),
          pinPath: o.pinPath,
        });
      } catch (err) {
        if (err instanceof AuditInputError) throw new CliError(err.message, EXIT.invalid);
        if (err instanceof DockerUnreachable) throw new CliError(err.message, EXIT.failure);
        throw err;
      }
      for (const w of report.warnings) process.stderr.write(`bastion: warning: ${w}\n`);
      if (format === 'json' || format === 'yaml') printData(report, format, () => '');
      else if (format === 'sarif') {
        const { toSarif } = await import('../../audit/sarif.js');
        process.stdout.write(JSON.stringify(toSarif(report, program.version() ?? '0.0.0'), null, 2) + '\n');
      } else {
        const { renderTable } = await import('../../audit/table.js');
        process.stdout.write(renderTable(report, colors));
      }
      const threshold = o.failOn;
      if (threshold !== 'none' && isSeverity(threshold) && report.findings.some((f) => atLeast(f.severity, threshold))) {
        process.exitCode = EXIT.failure;
      }
    });
}
