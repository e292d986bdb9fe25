/**
 * `bastion cluster certs`: a CA and the certificates a cluster needs, made
 * with the openssl command (node:crypto makes keys, not X.509 certificates).
 *
 *   ca.pem, ca-key.pem             the cluster CA (kept if DIR already has one: add nodes later)
 *   etcd-server.pem, -key.pem      etcd's serving certificate (SANs: --etcd-hosts, 127.0.0.1, localhost)
 *   root.pem, -key.pem             CN=root: `bastion cluster init` only (creates users and roles)
 *   admin.pem, -key.pem            CN=bastion-admin: `bastion policy ... --cluster`
 *   node-NAME.pem, -key.pem        CN=bastion-node-NAME: that node's daemon
 *
 * etcd runs with --client-cert-auth, so a certificate's CN is its etcd user:
 * the node certificate is the node's identity, and roles.ts decides what it
 * may write. Keys are P-256, written mode 0600.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { isIP } from 'node:net';
import { ADMIN_USER, ROOT_USER, checkNodeName, nodeUser } from './keys.js';

export interface CertsOptions {
  dir: string;
  nodes: string[];
  /** names and addresses etcd is reached at (SANs of its certificate) */
  etcdHosts: string[];
  days: number;
}

export interface CertsResult {
  dir: string;
  /** file names written, relative to dir */
  written: string[];
  /** the CA was already there and was reused */
  reusedCa: boolean;
}

function openssl(args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args[0]} failed: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

export async function writeClusterCerts(o: CertsOptions): Promise<CertsResult> {
  for (const n of o.nodes) {
    const bad = checkNodeName(n);
    if (bad) throw new Error(bad);
  }
  if (new Set(o.nodes).size !== o.nodes.length) throw new Error('--nodes: a node is named twice');
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  const work = mkdtempSync(join(tmpdir(), 'bastion-certs-'));
  const ca = join(o.dir, 'ca.pem');
  const caKey = join(o.dir, 'ca-key.pem');
  const reusedCa = existsSync(ca) && existsSync(caKey);
  try {
    if (!reusedCa) {
      await newKey(caKey, work);
      await openssl(
        ['req', '-x509', '-new', '-key', caKey, '-subj', '/CN=bastion-cluster-ca', '-days', String(o.days), '-out', ca, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
        work,
      );
      written.push('ca.pem', 'ca-key.pem');
    }
    const issue = async (base: string, cn: string, usage: string, sans?: string[]): Promise<void> => {
      const key = join(o.dir, `${base}-key.pem`);
      const cert = join(o.dir, `${base}.pem`);
      const csr = join(work, `${base}.csr`);
      const ext = join(work, `${base}.ext`);
      await newKey(key, work);
      await openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', csr], work);
      const lines = ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${usage}`];
      if (sans?.length) lines.push(`subjectAltName=${sans.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',')}`);
      writeFileSync(ext, lines.join('\n') + '\n');
      await openssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-CAserial', join(work, 'ca.srl'), '-days', String(o.days), '-out', cert, '-extfile', ext], work);
      written.push(`${base}.pem`, `${base}-key.pem`);
    };
    const sans = [...new Set([...o.etcdHosts, '127.0.0.1', 'localhost'])];
    if (!reusedCa || !existsSync(join(o.dir, 'etcd-server.pem'))) await issue('etcd-server', 'etcd-server', 'serverAuth,clientAuth', sans);
    if (!reusedCa || !existsSync(join(o.dir, 'root.pem'))) await issue('root', ROOT_USER, 'clientAuth');
    if (!reusedCa || !existsSync(join(o.dir, 'admin.pem'))) await issue('admin', ADMIN_USER, 'clientAuth');
    for (const n of o.nodes) await issue(`node-${n}`, nodeUser(n), 'clientAuth');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { dir: o.dir, written, reusedCa };
}

async function newKey(path: string, cwd: string): Promise<void> {
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path], cwd);
  chmodSync(path, 0o600);
}
