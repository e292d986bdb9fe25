/** Names and addresses of the demo (no heavy imports: the CLI's help text uses them). */
import { join } from 'node:path';
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
