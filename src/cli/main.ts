/**
 * `bastion`: the command line. Each command lives in its own module under
 * ./commands and registers itself on the program.
 */
import { Command } from 'commander';
import { registerCommands } from './commands/index.js';
import { CliError, EXIT } from './errors.js';
import { DaemonUnreachable } from '../api/client.js';
import { InputFileError } from '../policy/input-file.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command();
  program
    .name('bastion')
    .description('Security enforcement network stack for container networks')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerCommands(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
    // unknown command or option, a missing or invalid value: commander has said why
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) return EXIT.usage;
    if (err instanceof CliError) {
      process.stderr.write(`bastion: ${err.message}\n`);
      return err.exitCode;
    }
    // an input file that could not be read (1) or was refused: not a regular file, not ours, too large (3)
    if (err instanceof InputFileError) {
      process.stderr.write(`bastion: ${err.message}\n`);
      return err.invalidInput ? EXIT.invalid : EXIT.failure;
    }
    // every command that needs the daemon: "not running" is exit 4, as for status
    if (err instanceof DaemonUnreachable) {
      process.stderr.write(`bastion: ${err.message} (is "bastion run" running with this --pin-path?)\n`);
      return EXIT.notReady;
    }
    process.stderr.write(`bastion: ${e.message ?? String(err)}\n`);
    return 1;
  }
}

// `bastion status | head`: a closed pipe ends the command quietly, as for any Unix tool.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
