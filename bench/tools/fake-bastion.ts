/**
 * A stand-in for `bin/bastion` with the same command-line contract, used only
 * to exercise the benchmark's bastion code path before the real daemon works:
 *
 *   node dist/bench/tools/fake-bastion.js run --config FILE --pin-path DIR
 *   node dist/bench/tools/fake-bastion.js down --pin-path DIR
 *
 * It enforces the config's policies between its containers with iptables in
 * its own network namespace (so its figures are iptables figures, nothing
 * more), re-applies on SIGHUP and on file change, leaves enforcement in place
 * on SIGTERM, and `down` removes it. Selectors: matchLabels only.
 *
 *   npm run bench -- --quick --bastion-cmd "node dist/bench/tools/fake-bastion.js"
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { parse } from 'yaml';

interface Container {
  name: string;
  netns: string;
  interface?: string;
  labels?: Record<string, string>;
}
interface Policy {
  name: string;
  from: Record<string, string>;
  to: Record<string, string>;
  ports?: string[];
}

const args = process.argv.slice(2);
const cmd = args[0];
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

if (args.includes('--help')) {
  process.stdout.write(`usage: fake-bastion ${cmd ?? 'run|down'} [--config FILE] --pin-path DIR\n`);
  process.exit(0);
}

function setBridgeNf(on: boolean): void {
  try {
    writeFileSync('/proc/sys/net/bridge/bridge-nf-call-iptables', on ? '1' : '0');
  } catch {
    /* no br_netfilter */
  }
}

function restore(text: string): void {
  execFileSync('iptables-restore', ['-w'], { input: text });
}

const ipCache = new Map<string, string>();
function ipOf(c: Container): string {
  const key = `${c.netns}/${c.interface ?? 'eth0'}`;
  let ip = ipCache.get(key);
  if (!ip) {
    const out = execFileSync('ip', ['-n', c.netns, '-j', '-4', 'addr', 'show', 'dev', c.interface ?? 'eth0'], { encoding: 'utf8' });
    ip = JSON.parse(out)[0]?.addr_info?.[0]?.local as string;
    if (!ip) throw new Error(`no address on ${key}`);
    ipCache.set(key, ip);
  }
  return ip;
}

function matches(sel: Record<string, string>, labels: Record<string, string> = {}): boolean {
  return Object.entries(sel).every(([k, v]) => labels[k] === v);
}

function apply(file: string): void {
  const cfg = parse(readFileSync(file, 'utf8')) as { containers: Container[]; policies: Policy[] };
  const lines = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', '-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'];
  for (const p of cfg.policies ?? []) {
    const from = cfg.containers.filter((c) => matches(p.from, c.labels));
    const to = cfg.containers.filter((c) => matches(p.to, c.labels));
    for (const f of from) {
      for (const t of to) {
        for (const spec of p.ports ?? []) {
          const [port, proto = 'tcp'] = spec.split('/');
          lines.push(`-A FORWARD -s ${ipOf(f)}/32 -d ${ipOf(t)}/32 -p ${proto} -m ${proto} --dport ${port} -j ACCEPT`);
        }
      }
    }
  }
  lines.push('-A FORWARD -j DROP', 'COMMIT', '');
  setBridgeNf(true);
  restore(lines.join('\n'));
}

const pin = opt('--pin-path');
if (!pin) {
  process.stderr.write('fake-bastion: --pin-path is required\n');
  process.exit(2);
}

if (cmd === 'down') {
  restore(['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', 'COMMIT', ''].join('\n'));
  setBridgeNf(false);
  rmSync(pin, { recursive: true, force: true });
  process.exit(0);
}

if (cmd !== 'run') {
  process.stderr.write('usage: fake-bastion run|down ...\n');
  process.exit(2);
}
const config = opt('--config');
if (!config) {
  process.stderr.write('fake-bastion: --config is required\n');
  process.exit(2);
}
mkdirSync(pin, { recursive: true });
apply(config);
process.stdout.write(JSON.stringify({ msg: 'ready' }) + '\n');
const reload = () => {
  try {
    const t0 = performance.now();
    apply(config);
    process.stdout.write(JSON.stringify({ msg: 'config applied', ms: +(performance.now() - t0).toFixed(2) }) + '\n');
  } catch (err) {
    process.stderr.write(`fake-bastion: ${(err as Error).message}\n`);
  }
};
process.on('SIGHUP', reload);
let timer: NodeJS.Timeout | undefined;
const file = resolve(config);
const watcher = watch(dirname(file), (_e, name) => {
  if (name && name.toString() !== basename(file)) return;
  clearTimeout(timer);
  timer = setTimeout(reload, 50);
});
const stop = () => {
  watcher.close();
  clearTimeout(timer);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setInterval(() => {}, 1 << 30);
