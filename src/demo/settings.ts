/** Names and addresses of the demo (no heavy imports: the CLI's help text uses them). */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RUN_DIR } from '../api/paths.js';

export const DEMO = {
  network: 'bastion-demo',
  subnet: '10.213.7.0/24',
  gateway: '10.213.7.1',
  label: 'bastion.demo',
  pinPath: '/sys/fs/bpf/bastion-demo',
  hostPort: 18080,
  image: 'bastion/busybox:latest',
  config: join(RUN_DIR, 'demo', 'bastion-demo.yaml'),
  log: '/var/log/bastion-demo.log',
  pidFile: join(RUN_DIR, 'demo', 'daemon.pid'),
  hostListenerPid: join(RUN_DIR, 'demo', 'host-listener.pid'),
};

/** The repository's bin/bastion, as an absolute path (the demo's commands work from any directory). */
export const BASTION_BIN = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'bin', 'bastion');

/**
 * A bastion command line as the user can paste it: the absolute path of
 * bin/bastion, and sudo in front when the demo itself was run through sudo
 * (the daemon's socket and pins are root's).
 */
export function demoCommand(args: string): string {
  return `${process.env.SUDO_USER && process.getuid?.() === 0 ? 'sudo ' : ''}${BASTION_BIN} ${args}`;
}
