import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { DEFAULT_PIN_PATH } from '../../datapath/layout.js';
import { socketPathFor } from '../../api/paths.js';
import { apiRequest, DaemonUnreachable } from '../../api/client.js';
import { CliError, EXIT } from '../errors.js';
import { startConsole } from '../../ui/server.js';

export const DEFAULT_UI_PORT = 9474;

/** "127.0.0.1:9474", "[::1]:9474", "localhost:0", "9474" → host and port; a wildcard is refused (the console must know its own name). */
export function parseListen(text: string): { host: string; port: number } {
  const t = text.trim();
  const m = /^\d{1,5}$/.test(t) ? [t, undefined, undefined, t] : /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(t);
  if (!m) throw new CliError(`--listen ${text}: expected HOST:PORT, e.g. 127.0.0.1:${DEFAULT_UI_PORT}`, EXIT.usage);
  const host = m[1] ?? m[2] ?? '127.0.0.1';
  const port = Number(m[3]);
  if (port > 65535) throw new CliError(`--listen ${text}: port ${port} is out of range`, EXIT.usage);
  if (host === '0.0.0.0' || host === '::' || host === '*') {
    throw new CliError(`--listen ${text}: name one address (a wildcard would accept requests whose Host the console cannot check); for a remote host, use SSH port forwarding (docs/console.md)`, EXIT.usage);
  }
  return { host, port };
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\./.test(host);

export function registerUi(program: Command): void {
  program
    .command('ui')
    .description('Serve the web console (network map, live flows, learn → verify → apply) on a loopback address, with an access token')
    .option('--listen <host:port>', 'address to serve on (loopback unless you name another)', `127.0.0.1:${DEFAULT_UI_PORT}`)
    .option('--open', 'open the console in the desktop browser (xdg-open)')
    .option('--pin-path <dir>', 'bpffs directory of the instance', DEFAULT_PIN_PATH)
    .addHelpText(
      'after',
      `
The console talks to the daemon through its API socket (as the CLI does) and
refuses every request without the token it prints, and every request from
another web page. On a remote host, forward the port over SSH:

  ssh -t -L ${DEFAULT_UI_PORT}:127.0.0.1:${DEFAULT_UI_PORT} HOST sudo bastion ui
  # then open the printed URL on your machine

Stop it with Ctrl-C. See docs/console.md.`,
    )
    .action(async (opts: { listen: string; open?: boolean; pinPath: string }) => {
      const { host, port } = parseListen(opts.listen);
      const socketPath = socketPathFor(opts.pinPath);
      try {
        await apiRequest(socketPath, 'GET', '/v1/status');
      } catch (err) {
        if (err instanceof DaemonUnreachable) throw new CliError(`${err.message} (start it with bastion run)`, EXIT.notReady);
        throw err;
      }
      let ui;
      try {
        ui = await startConsole({ socketPath, host, port });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === 'EADDRINUSE') throw new CliError(`${host}:${port} is in use: choose another port with --listen ${host}:PORT`, EXIT.failure);
        if (e.code === 'EADDRNOTAVAIL') throw new CliError(`${host} is not an address of this host`, EXIT.usage);
        throw err;
      }
      process.stdout.write(`Bastion console: ${ui.openUrl}\n`);
      process.stderr.write(
        `(daemon ${socketPath}; anyone with this URL can change policy: keep it private. Ctrl-C stops the console.)\n` +
          (isLoopback(host) ? '' : `warning: ${host} is not a loopback address: every host that reaches it can try the token\n`),
      );
      if (opts.open) {
        const child = spawn('xdg-open', [ui.openUrl], { stdio: 'ignore', detached: true });
        child.on('error', () => process.stderr.write('could not run xdg-open: open the URL above in your browser\n'));
        child.unref();
      }
      await new Promise<void>((resolve) => {
        const stop = () => void ui.close().then(resolve);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
