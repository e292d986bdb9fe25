import type { Command } from 'commander';
import { DEMO, demoCommand } from '../../demo/settings.js';
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
Each attempt runs on plain Docker first, then under Bastion; a row says what
stopped it, from the daemon's own flow log (drop reasons) and counters, and says
so when plain Docker was not open to it either.
The Bastion daemon keeps running afterwards so you can look around:
  ${demoCommand(`status --pin-path ${DEMO.pinPath}`)}
  ${demoCommand(`flows --pin-path ${DEMO.pinPath} --follow`)}
Exit status: 0 when every attack worked on plain Docker (or is marked as not
possible there) and was blocked under Bastion, and every declared dependency worked.`,
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
          c.protection ?? '',
          c.ok ? colors.green(c.verdict ?? '') : colors.red(c.verdict ?? 'FAILED'),
        ]);
        return (
          '\n' +
          colors.bold('Bastion demo: what was tried, and what got through') +
          '\n\n' +
          formatTable(['ATTEMPT', 'PLAIN DOCKER', 'WITH BASTION', 'STOPPED BY', 'VERDICT'], rows) +
          '\n' +
          (report.passed
            ? colors.green(`All ${report.checks.length} checks passed: every attack that works on plain Docker was blocked, declared dependencies work.`)
            : colors.red('Some checks failed (see above).')) +
          `\n\nThe daemon is still running. Live state:\n  ${demoCommand(`status --pin-path ${DEMO.pinPath}`)}\n  ${demoCommand(`flows --pin-path ${DEMO.pinPath} --follow`)}\nRemove everything:\n  ${demoCommand('demo --down')}\n`
        );
      });
      process.exitCode = report.passed ? EXIT.ok : EXIT.failure;
    });
}
