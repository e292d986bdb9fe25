import type { Command } from 'commander';
import { DEMO } from '../../demo/settings.js';
import { colors, formatTable, parseOutputFormat, printData } from '../output.js';
import { EXIT } from '../errors.js';
import { jsonOption, outputOption } from '../options.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('Start a small app on Docker (web → api → db, plus an attacker), attack it with and without Bastion, and report')
    .option('--down', 'remove the demo: daemon, stacks, pins, containers, network')
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
Installs and starts what is missing (Docker engine, a local busybox image; no registry needed).
The Bastion daemon keeps running afterwards so you can look around:
  bin/bastion status --pin-path ${DEMO.pinPath}
  bin/bastion flows --pin-path ${DEMO.pinPath} --follow
Exit status: 0 when every attack was blocked and every declared dependency worked.`,
    )
    .action(async (opts: { down?: boolean; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const say = (m: string) => process.stderr.write(`${colors.dim('▸')} ${m}\n`);
      if (opts.down) {
        const { demoDown } = await import('../../demo/demo.js');
        await demoDown(say);
        say('demo removed');
        return;
      }
      const { runDemo } = await import('../../demo/demo.js');
      const report = await runDemo(say);
      printData({ passed: report.passed, checks: report.checks, pinPath: DEMO.pinPath }, format, () => {
        const rows = report.checks.map((c) => [
          c.attack,
          c.plain ?? '',
          c.bastion ?? '',
          c.ok ? colors.green(c.expectWithBastion === 'allowed' ? 'works' : 'blocked') : colors.red('FAILED'),
        ]);
        return (
          '\n' +
          colors.bold('Bastion demo: what was tried, and what got through') +
          '\n\n' +
          formatTable(['ATTEMPT', 'PLAIN DOCKER', 'WITH BASTION', 'VERDICT'], rows) +
          '\n' +
          (report.passed
            ? colors.green(`All ${report.checks.length} checks passed: attacks blocked, declared dependencies working.`)
            : colors.red('Some checks failed (see above).')) +
          `\n\nThe daemon is still running. Live state:\n  bin/bastion status --pin-path ${DEMO.pinPath}\n  bin/bastion flows --pin-path ${DEMO.pinPath} --follow\nRemove everything:\n  bin/bastion demo --down\n`
        );
      });
      process.exitCode = report.passed ? EXIT.ok : EXIT.failure;
    });
}
