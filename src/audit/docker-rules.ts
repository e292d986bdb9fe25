/**
 * The Docker checks, as pure functions over what the engine reports (`docker
 * info`, `docker version`, `docker inspect`) and a few host facts (dockerd's
 * flags, the socket's permissions, a container's capability bounding set).
 * ./docker-collect.ts gathers these facts; tests give recorded ones.
 */
import type { ContainerInspect } from '../platform/docker/mapping.js';
import { containerName, shortId } from '../platform/docker/mapping.js';
import type { AuditObject, Finding } from './findings.js';
import { DANGEROUS_CAPABILITIES, capRuleId, finding } from './rules.js';
import { dockerBefore18092, runcEscapes } from './runc.js';

/** What the audit reads of `GET /containers/{id}/json`, on top of what the adapter reads. */
export interface AuditInspect extends ContainerInspect {
  AppArmorProfile?: string;
  HostConfig: ContainerInspect['HostConfig'] & {
    CapDrop?: string[] | null;
    PidMode?: string;
    IpcMode?: string;
    UTSMode?: string;
    SecurityOpt?: string[] | null;
    PortBindings?: Record<string, PortBinding[] | null> | null;
  };
  Mounts?: Array<{ Type?: string; Source?: string; Destination?: string; RW?: boolean }> | null;
  NetworkSettings: ContainerInspect['NetworkSettings'] & {
    Ports?: Record<string, PortBinding[] | null> | null;
  };
}

export interface PortBinding {
  HostIp?: string;
  HostPort?: string;
}

/** A container as the checks see it. */
export interface ContainerFacts {
  inspect: AuditInspect;
  /** CapBnd of the container's first process (/proc/PID/status), when the engine is local */
  boundingCaps?: bigint;
}

/** dockerd's settings that `docker info` does not show, from its command line and daemon.json. */
export interface DaemonFlags {
  userlandProxy: boolean;
  iptables: boolean;
  noNewPrivileges: boolean;
  /** where they were read: "dockerd --live-restore (pid 123), /etc/docker/daemon.json" */
  source: string;
}

export interface SocketFacts {
  path: string;
  /** st_mode & 0o777 */
  mode: number;
  uid: number;
  gid: number;
  /** names, when they resolve */
  user?: string;
  group?: string;
}

export interface EngineFacts {
  /** ServerVersion */
  version: string;
  runc?: {
    version: string;
    /** GitCommit as the engine reports it (a distribution build puts its package version there) */
    commit?: string;
    /** CVE ids that the installed distribution package's changelog names */
    fixedByPackage: string[];
    /** where fixedByPackage was read */
    packageSource?: string;
  };
  /** SecurityOptions of `docker info`: name=seccomp,profile=default, name=apparmor, name=userns... */
  securityOptions: string[];
  liveRestore: boolean;
  /** com.docker.network.bridge.enable_icc of the default bridge; undefined without one */
  defaultBridgeIcc?: boolean;
  /** undefined when dockerd's command line could not be read (a remote engine) */
  flags?: DaemonFlags;
  socket?: SocketFacts;
}

const ENGINE: AuditObject = { kind: 'engine', name: 'dockerd' };

export function auditEngine(e: EngineFacts): Finding[] {
  const out: Finding[] = [];
  // known escapes, by runc version (the engine version when runc reports none)
  if (e.runc) {
    const cves = runcEscapes(e.runc.version, e.runc.fixedByPackage) ?? [];
    for (const c of cves) {
      out.push(
        finding('docker.engine.runc-escape', { kind: 'engine', name: `runc ${e.runc.version}` }, [
          { field: 'docker version: Components[runc].Version', value: e.runc.version },
          ...(e.runc.commit ? [{ field: 'docker version: Components[runc].GitCommit', value: e.runc.commit }] : []),
          { field: c.id, value: `fixed in ${c.fixedIn.join(', ')}: ${c.summary}` },
          ...(e.runc.packageSource ? [{ field: 'distribution changelog', value: `${e.runc.packageSource} does not name ${c.id}` }] : []),
        ]),
      );
    }
  } else if (dockerBefore18092(e.version)) {
    out.push(
      finding('docker.engine.runc-escape', ENGINE, [
        { field: 'docker version: Version', value: e.version },
        { field: 'CVE-2019-5736', value: 'Docker before 18.09.2 ships a runc through 1.0-rc6' },
      ]),
    );
  }
  if (e.socket) out.push(...auditSocket(e.socket));
  if (e.defaultBridgeIcc) {
    out.push(finding('docker.engine.icc', ENGINE, [{ field: 'network bridge: Options["com.docker.network.bridge.enable_icc"]', value: 'true' }]));
  }
  if (e.flags?.userlandProxy) {
    out.push(finding('docker.engine.userland-proxy', ENGINE, [{ field: 'userland-proxy', value: `true (not turned off in ${e.flags.source})` }]));
  }
  if (e.flags && !e.flags.iptables) {
    out.push(finding('docker.engine.iptables', ENGINE, [{ field: 'iptables', value: `false (${e.flags.source})` }]));
  }
  if (!e.liveRestore) out.push(finding('docker.engine.live-restore', ENGINE, [{ field: 'docker info: LiveRestoreEnabled', value: 'false' }]));
  if (!e.securityOptions.some((o) => /(^|,)name=userns(,|$)/.test(o))) {
    out.push(finding('docker.engine.userns-remap', ENGINE, [{ field: 'docker info: SecurityOptions', value: JSON.stringify(e.securityOptions) }]));
  }
  return out;
}

/** The Docker socket: rw for root and the docker group only (660 root:docker). */
export function auditSocket(s: SocketFacts): Finding[] {
  const problems: string[] = [];
  let severity: 'critical' | 'high' | undefined;
  if (s.mode & 0o006) {
    severity = 'critical';
    problems.push(`mode ${octal(s.mode)} gives every local user access`);
  } else if (s.mode & 0o117) {
    severity = 'high';
    problems.push(`mode ${octal(s.mode)} is wider than 660`);
  }
  if (s.uid !== 0) {
    severity ??= 'high';
    problems.push(`owner ${s.user ?? s.uid} is not root`);
  }
  if (s.gid !== 0 && s.group !== 'docker') {
    severity ??= 'high';
    problems.push(`group ${s.group ?? s.gid} is neither root nor docker`);
  }
  if (!severity) return [];
  return [
    finding(
      'docker.engine.socket-permissions',
      { kind: 'engine', name: s.path },
      [
        { field: `stat ${s.path}`, value: `${octal(s.mode)} ${s.user ?? s.uid}:${s.group ?? s.gid}` },
        { field: 'problem', value: problems.join('; ') },
      ],
      { severity },
    ),
  ];
}

const octal = (m: number) => m.toString(8).padStart(3, '0');

/** Docker's default capability set (moby oci/caps/defaults.go). */
export const DOCKER_DEFAULT_CAPS: readonly string[] = [
  'CHOWN', 'DAC_OVERRIDE', 'FSETID', 'FOWNER', 'MKNOD', 'NET_RAW', 'SETGID', 'SETUID',
  'SETFCAP', 'SETPCAP', 'NET_BIND_SERVICE', 'SYS_CHROOT', 'KILL', 'AUDIT_WRITE',
];

const CAP_NET_RAW_BIT = 13n;

export function capName(c: string): string {
  return c.toUpperCase().replace(/^CAP_/, '');
}

/** Host paths whose bind mount is reported (a path under them too). */
export const SENSITIVE_HOST_PATHS: readonly string[] = ['/boot', '/dev', '/etc', '/lib', '/proc', '/sys', '/usr', '/var/lib/docker'];

export interface ContainerContext {
  engine: Pick<EngineFacts, 'securityOptions' | 'flags' | 'socket'>;
  /**
   * containers a running Bastion protects in enforce mode, by id (12 hex
   * digits): their NET_RAW finding is lowered
   */
  enforced?: ReadonlySet<string>;
}

export function containerObject(info: Pick<ContainerInspect, 'Id' | 'Name'>): AuditObject {
  return { kind: 'container', name: containerName(info), id: shortId(info.Id) };
}

export function auditContainer(c: ContainerFacts, ctx: ContainerContext): Finding[] {
  const info = c.inspect;
  const hc = info.HostConfig;
  const obj = containerObject(info);
  const out: Finding[] = [];
  const secopt = (hc.SecurityOpt ?? []).map((s) => s.trim());
  const privileged = hc.Privileged === true;

  if (privileged) out.push(finding('docker.container.privileged', obj, [{ field: 'HostConfig.Privileged', value: 'true' }]));
  const mode = hc.NetworkMode ?? '';
  if (mode === 'host') out.push(finding('docker.container.host-network', obj, [{ field: 'HostConfig.NetworkMode', value: 'host' }]));
  if (mode.startsWith('container:')) out.push(finding('docker.container.shared-netns', obj, [{ field: 'HostConfig.NetworkMode', value: mode }]));
  if (hc.PidMode === 'host') out.push(finding('docker.container.host-pid', obj, [{ field: 'HostConfig.PidMode', value: 'host' }]));
  if (hc.IpcMode === 'host') out.push(finding('docker.container.host-ipc', obj, [{ field: 'HostConfig.IpcMode', value: 'host' }]));
  if (hc.UTSMode === 'host') out.push(finding('docker.container.host-uts', obj, [{ field: 'HostConfig.UTSMode', value: 'host' }]));

  // capabilities
  const added = new Map((hc.CapAdd ?? []).map((raw) => [capName(raw), raw]));
  const dropped = new Set((hc.CapDrop ?? []).map(capName));
  for (const d of DANGEROUS_CAPABILITIES) {
    if (added.has(d.cap)) out.push(finding(capRuleId(d.cap), obj, [{ field: 'HostConfig.CapAdd', value: JSON.stringify(hc.CapAdd) }]));
  }
  if (!privileged) {
    const netRaw = netRawEvidence(c, added, dropped);
    if (netRaw) {
      const lowered = ctx.enforced?.has(obj.id!) === true;
      out.push(
        finding('docker.container.net-raw', obj, [...netRaw, ...(lowered ? [{ field: 'bastion', value: 'protected in enforce mode: forged ARP, IP and MAC are dropped by its stack' }] : [])], {
          ...(lowered ? { severity: 'low' as const } : {}),
        }),
      );
    }
  }

  // mounts
  const socketPaths = new Set(['/var/run/docker.sock', '/run/docker.sock', ...(ctx.engine.socket ? [ctx.engine.socket.path] : []), '/var/run', '/run']);
  for (const m of info.Mounts ?? []) {
    if (m.Type !== 'bind' || !m.Source) continue;
    const src = m.Source.replace(/\/+$/, '') || '/';
    const ev = [{ field: 'Mounts', value: `${m.Source} -> ${m.Destination ?? '?'} (${m.RW === false ? 'ro' : 'rw'})` }];
    if (src === '/') out.push(finding('docker.container.host-root', obj, ev));
    else if (socketPaths.has(src)) out.push(finding('docker.container.docker-socket', obj, ev));
    else if (SENSITIVE_HOST_PATHS.some((p) => src === p || src.startsWith(p + '/'))) {
      out.push(finding('docker.container.sensitive-mount', obj, ev, m.RW === false ? { severity: 'medium' } : {}));
    }
  }

  // security options (a privileged container has none of them; it is reported as privileged)
  if (!privileged) {
    const nnp = secopt.some((o) => /^no-new-privileges([=:]true)?$/.test(o));
    const nnpOff = secopt.some((o) => /^no-new-privileges[=:]false$/.test(o));
    if (nnpOff || (!nnp && !ctx.engine.flags?.noNewPrivileges)) {
      out.push(
        finding('docker.container.no-new-privileges', obj, [
          { field: 'HostConfig.SecurityOpt', value: JSON.stringify(hc.SecurityOpt ?? []) },
          {
            field: 'dockerd no-new-privileges',
            value: ctx.engine.flags ? `${ctx.engine.flags.noNewPrivileges} (${ctx.engine.flags.source})` : 'unknown (dockerd\'s command line was not readable)',
          },
        ]),
      );
    }
    const engineSeccomp = ctx.engine.securityOptions.some((o) => /(^|,)name=seccomp(,|$)/.test(o));
    const unconfined = secopt.find((o) => /^seccomp[=:]unconfined$/.test(o));
    if (unconfined) out.push(finding('docker.container.seccomp-unconfined', obj, [{ field: 'HostConfig.SecurityOpt', value: unconfined }]));
    else if (!engineSeccomp) {
      out.push(finding('docker.container.seccomp-unconfined', obj, [{ field: 'docker info: SecurityOptions', value: `${JSON.stringify(ctx.engine.securityOptions)} (no seccomp: the engine confines no container)` }]));
    }
    const hostAppArmor = ctx.engine.securityOptions.some((o) => /(^|,)name=apparmor(,|$)/.test(o));
    const profile = info.AppArmorProfile ?? '';
    if (hostAppArmor && (profile === '' || profile === 'unconfined')) {
      out.push(finding('docker.container.apparmor-unconfined', obj, [{ field: 'AppArmorProfile', value: profile || '(none)' }]));
    }
  }

  // published ports
  const ports = info.State.Running ? info.NetworkSettings.Ports : hc.PortBindings;
  for (const [port, bindings] of Object.entries(ports ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const open = (bindings ?? []).filter((b) => !b.HostIp || b.HostIp === '0.0.0.0' || b.HostIp === '::');
    if (open.length === 0) continue;
    out.push(
      finding(
        'docker.container.ports-all-addresses',
        obj,
        [{ field: `${info.State.Running ? 'NetworkSettings.Ports' : 'HostConfig.PortBindings'}["${port}"]`, value: open.map((b) => `${b.HostIp || '0.0.0.0'}:${b.HostPort ?? ''}`).join(', ') }],
        { fix: `publish it on one address: -p 127.0.0.1:${open[0]!.HostPort ?? 'HOSTPORT'}:${port.split('/')[0]}${port.endsWith('/udp') ? '/udp' : ''}` },
      ),
    );
  }
  return out;
}

/** Why the container has CAP_NET_RAW, or undefined when it has not. */
function netRawEvidence(c: ContainerFacts, added: Map<string, string>, dropped: Set<string>): Array<{ field: string; value: string }> | undefined {
  const hc = c.inspect.HostConfig;
  if (c.boundingCaps !== undefined) {
    if (((c.boundingCaps >> CAP_NET_RAW_BIT) & 1n) === 0n) return undefined;
    return [
      { field: `/proc/${c.inspect.State.Pid}/status CapBnd`, value: `${c.boundingCaps.toString(16).padStart(16, '0')} (bit 13, CAP_NET_RAW, set)` },
      { field: 'HostConfig.CapDrop', value: JSON.stringify(hc.CapDrop ?? []) },
    ];
  }
  const has = added.has('NET_RAW') || (added.has('ALL') && !dropped.has('NET_RAW')) || (!dropped.has('ALL') && !dropped.has('NET_RAW'));
  if (!has) return undefined;
  return [
    { field: 'HostConfig.CapAdd', value: JSON.stringify(hc.CapAdd ?? []) },
    { field: 'HostConfig.CapDrop', value: `${JSON.stringify(hc.CapDrop ?? [])} (NET_RAW is in Docker's default set)` },
  ];
}
