/**
 * Gathers what the Docker checks read: the engine's info, version, networks
 * and running containers through the Docker API (dockerode, as the Docker
 * adapter), and, when the engine is on this host, what the API does not
 * say: dockerd's command line and daemon.json, the socket's owner and mode,
 * each container's capability bounding set, and the changelog of the
 * distribution's runc package (for fixes backported under an old version).
 * Everything that cannot be read is reported as a skipped check.
 */
import { readFile, stat } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import Docker from 'dockerode';
import pLimit from 'p-limit';
import { defaultDockerSocket } from '../platform/docker/platform.js';
import { toDockerNetwork, type DockerNetwork, type NetworkInfo } from '../platform/docker/mapping.js';
import type { AuditInspect, ContainerFacts, DaemonFlags, EngineFacts, SocketFacts } from './docker-rules.js';
import type { Skipped } from './findings.js';
import { changelogVersion, cvesInChangelog } from './runc.js';

export interface DockerFacts {
  engine: EngineFacts;
  containers: ContainerFacts[];
  networks: Map<string, DockerNetwork>;
  skipped: Skipped[];
}

export class DockerUnreachable extends Error {}

/** Debian's changelog of the runc package (docker.io depends on it). */
export const RUNC_DEBIAN_CHANGELOG = '/usr/share/doc/runc/changelog.Debian.gz';

export interface CollectOptions {
  socketPath?: string;
  docker?: Docker;
  /** where to look for dockerd's pid (default /var/run/docker.pid) */
  pidFile?: string;
  /** root of the host's /proc and /etc (tests) */
  hostRoot?: string;
}

export async function collectDocker(o: CollectOptions = {}): Promise<DockerFacts> {
  const socketPath = o.socketPath ?? defaultDockerSocket();
  const docker = o.docker ?? new Docker({ socketPath });
  const root = o.hostRoot ?? '';
  const skipped: Skipped[] = [];
  let info: Record<string, unknown>;
  let version: { Version?: string; Components?: Array<{ Name: string; Version: string; Details?: { GitCommit?: string } }> };
  try {
    [info, version] = await Promise.all([docker.info() as Promise<Record<string, unknown>>, docker.version() as Promise<typeof version>]);
  } catch (err) {
    throw new DockerUnreachable(`cannot reach the Docker engine at ${socketPath}: ${(err as Error).message}`);
  }

  const rawNetworks = (await docker.listNetworks()) as unknown as NetworkInfo[];
  const networks = new Map(rawNetworks.map((n) => [n.Name, toDockerNetwork(n)]));
  const bridge = rawNetworks.find((n) => n.Name === 'bridge' && n.Driver === 'bridge');

  const runcComponent = version.Components?.find((c) => c.Name === 'runc');
  let runc: EngineFacts['runc'];
  if (runcComponent) {
    runc = { version: runcComponent.Version, fixedByPackage: [] };
    const commit = runcComponent.Details?.GitCommit;
    if (commit) runc.commit = commit;
    const log = await readGz(`${root}${RUNC_DEBIAN_CHANGELOG}`);
    if (log !== undefined && commit && changelogVersion(log) === commit) {
      runc.fixedByPackage = cvesInChangelog(log);
      runc.packageSource = `${RUNC_DEBIAN_CHANGELOG} (${commit})`;
    }
  } else {
    skipped.push({ check: 'runc version', reason: 'the engine does not report a runc component (docker version): only its own version was checked for CVE-2019-5736' });
  }

  const flags = await readDaemonFlags(o.pidFile ?? `${root}/var/run/docker.pid`, root);
  if (!flags) skipped.push({ check: 'dockerd flags (userland-proxy, iptables, no-new-privileges default)', reason: 'dockerd\'s command line is not readable here (engine on another host, or no pid file)' });
  const socket = await readSocket(`${root}${socketPath}`, socketPath, root);
  if (!socket) skipped.push({ check: 'Docker socket permissions', reason: `cannot stat ${socketPath}` });

  const engine: EngineFacts = {
    version: String(info.ServerVersion ?? version.Version ?? ''),
    ...(runc ? { runc } : {}),
    securityOptions: (info.SecurityOptions as string[] | undefined) ?? [],
    liveRestore: info.LiveRestoreEnabled === true,
    ...(bridge ? { defaultBridgeIcc: (bridge.Options?.['com.docker.network.bridge.enable_icc'] ?? 'true') === 'true' } : {}),
    ...(flags ? { flags } : {}),
    ...(socket ? { socket } : {}),
  };

  const list = await docker.listContainers();
  const limit = pLimit(8);
  const containers = (
    await Promise.all(
      list.map((c) =>
        limit(async (): Promise<ContainerFacts | undefined> => {
          let inspect: AuditInspect;
          try {
            inspect = (await docker.getContainer(c.Id).inspect()) as unknown as AuditInspect;
          } catch (err) {
            if ((err as { statusCode?: number }).statusCode === 404) return undefined; // gone meanwhile
            throw err;
          }
          if (!inspect.State.Running) return undefined;
          const caps = await readBoundingCaps(`${root}/proc/${inspect.State.Pid}/status`);
          return { inspect, ...(caps !== undefined ? { boundingCaps: caps } : {}) };
        }),
      ),
    )
  ).filter((c): c is ContainerFacts => c !== undefined);
  return { engine, containers, networks, skipped };
}

async function readGz(path: string): Promise<string | undefined> {
  try {
    return gunzipSync(await readFile(path)).toString('utf8');
  } catch {
    return undefined;
  }
}

/** CapBnd of /proc/PID/status, or undefined. */
export async function readBoundingCaps(statusPath: string): Promise<bigint | undefined> {
  try {
    const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(await readFile(statusPath, 'utf8'));
    return m ? BigInt(`0x${m[1]}`) : undefined;
  } catch {
    return undefined;
  }
}

/** dockerd's userland-proxy, iptables and no-new-privileges settings: command line first, then daemon.json, then the defaults. */
export async function readDaemonFlags(pidFile: string, root = ''): Promise<DaemonFlags | undefined> {
  let pid: number;
  let argv: string[];
  try {
    pid = Number((await readFile(pidFile, 'utf8')).trim());
    argv = (await readFile(`${root}/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
  } catch {
    return undefined;
  }
  if (!argv[0] || !/dockerd$/.test(argv[0])) return undefined;
  const cli = parseDockerdArgs(argv.slice(1));
  const configFile = cli.configFile ?? '/etc/docker/daemon.json';
  let json: Record<string, unknown> = {};
  let jsonNote = `${configFile} (absent)`;
  try {
    json = JSON.parse(await readFile(`${root}${configFile}`, 'utf8')) as Record<string, unknown>;
    jsonNote = configFile;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') jsonNote = `${configFile} (unreadable: ${(err as Error).message})`;
  }
  const pick = (flag: keyof ReturnType<typeof parseDockerdArgs>, key: string, dflt: boolean): boolean => {
    const c = cli[flag];
    if (typeof c === 'boolean') return c;
    return typeof json[key] === 'boolean' ? (json[key] as boolean) : dflt;
  };
  return {
    userlandProxy: pick('userlandProxy', 'userland-proxy', true),
    iptables: pick('iptables', 'iptables', true),
    noNewPrivileges: pick('noNewPrivileges', 'no-new-privileges', false),
    source: `dockerd ${argv.slice(1).join(' ')} (pid ${pid}), ${jsonNote}`,
  };
}

/** The flags of dockerd's command line the audit reads (Go's flag syntax: --x, --x=false, --x value). */
export function parseDockerdArgs(args: string[]): { userlandProxy?: boolean; iptables?: boolean; noNewPrivileges?: boolean; configFile?: string } {
  const out: ReturnType<typeof parseDockerdArgs> = {};
  const bool = (v: string | undefined) => v === undefined || v === 'true' || v === '1';
  for (let i = 0; i < args.length; i++) {
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(args[i]!);
    if (!m) continue;
    const [, name, value] = m;
    if (name === 'userland-proxy') out.userlandProxy = bool(value);
    else if (name === 'iptables') out.iptables = bool(value);
    else if (name === 'no-new-privileges') out.noNewPrivileges = bool(value);
    else if (name === 'config-file') out.configFile = value ?? args[++i];
  }
  return out;
}

async function readSocket(path: string, shown: string, root: string): Promise<SocketFacts | undefined> {
  try {
    const st = await stat(path);
    const [user, group] = await Promise.all([nameOf(`${root}/etc/passwd`, st.uid), nameOf(`${root}/etc/group`, st.gid)]);
    return { path: shown, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, ...(user ? { user } : {}), ...(group ? { group } : {}) };
  } catch {
    return undefined;
  }
}

async function nameOf(file: string, id: number): Promise<string | undefined> {
  try {
    for (const line of (await readFile(file, 'utf8')).split('\n')) {
      const f = line.split(':');
      if (f.length > 2 && Number(f[2]) === id) return f[0];
    }
  } catch {
    // no names: ids are shown
  }
  return undefined;
}
