/**
 * The rule table of the posture audit: one entry per check, with its id,
 * severity, CIS mapping, title, what an attacker gains and the fix. Every
 * finding is made from an entry here (finding() below), SARIF's rule list is
 * this table, and docs/audit.md's list of checks is generated from it (a unit
 * test fails when the file and the table differ), so they cannot drift.
 *
 * CIS items are numbered as in the CIS Docker Benchmark v1.6.0 (the version
 * docker-bench-security implements) and the CIS Kubernetes Benchmark v1.9.0
 * (kube-bench's cis-1.9).
 */
import type { AuditObject, Evidence, Finding, Severity } from './findings.js';

export type RuleScope = 'docker-engine' | 'docker-container' | 'bastion' | 'kubernetes';

export interface CisItem {
  benchmark: 'docker' | 'kubernetes';
  item: string;
  title: string;
}

export interface RuleInfo {
  id: string;
  scope: RuleScope;
  /** the severity of a finding, unless `lowered` says when it is lower */
  severity: Severity;
  title: string;
  /** what an attacker gains */
  gain: string;
  /** the general fix (a finding may give a more precise one) */
  fix: string;
  /** what the check reads, and so what a finding proves */
  checks: string;
  cis?: CisItem;
  /** when a finding of this rule gets a lower severity than the rule's */
  lowered?: string;
}

export const CIS_BENCHMARKS = {
  docker: 'CIS Docker Benchmark v1.6.0',
  kubernetes: 'CIS Kubernetes Benchmark v1.9.0',
} as const;

export function cisText(c: CisItem): string {
  return `${CIS_BENCHMARKS[c.benchmark]} ${c.item}`;
}

const docker = (item: string, title: string): CisItem => ({ benchmark: 'docker', item, title });
const k8s = (item: string, title: string): CisItem => ({ benchmark: 'kubernetes', item, title });

/** Capabilities that break isolation when added to a container, one rule each. */
export const DANGEROUS_CAPABILITIES: ReadonlyArray<{ cap: string; severity: Severity; gain: string }> = [
  {
    cap: 'ALL',
    severity: 'critical',
    gain: 'every capability: mount file systems, load kernel modules, reconfigure its network, trace any process it sees; an escape to the host is a few commands away, and Bastion cannot protect it (CAP_NET_ADMIN among them)',
  },
  {
    cap: 'SYS_ADMIN',
    severity: 'critical',
    gain: 'mount, namespace and cgroup administration: the classic escapes (cgroup v1 release_agent, mounting the host disk from a device it can see) start here',
  },
  {
    cap: 'SYS_MODULE',
    severity: 'critical',
    gain: 'load a kernel module: code in the host kernel, the end of every isolation, Bastion\'s datapath included',
  },
  {
    cap: 'NET_ADMIN',
    severity: 'high',
    gain: 'reconfigure its own interfaces, addresses, routes and tc filters: it can change the address Bastion verifies and escape its stack; Bastion marks such a container unprotected',
  },
  {
    cap: 'BPF',
    severity: 'high',
    gain: 'load BPF programs and create or read BPF maps (with CAP_NET_ADMIN or CAP_PERFMON, attach them): kernel attack surface, and a way to read or tamper with BPF state it can reach',
  },
  {
    cap: 'SYS_PTRACE',
    severity: 'high',
    gain: 'trace and inject code into every process it can see (the host\'s, with --pid host), reading their memory and secrets',
  },
  {
    cap: 'DAC_READ_SEARCH',
    severity: 'high',
    gain: 'open_by_handle_at(2): read any file of the host file system a mount of the container lives on (the "shocker" escape)',
  },
];

export const capRuleId = (cap: string): string => `docker.container.cap-${cap.toLowerCase().replace(/_/g, '-')}`;

const RULE_LIST: RuleInfo[] = [
  // ---------------------------------------------------------------- Docker engine
  {
    id: 'docker.engine.runc-escape',
    scope: 'docker-engine',
    severity: 'critical',
    title: 'runc (or the Docker engine bundling it) has a known container escape',
    gain: 'a process in a container, or a malicious image, overwrites or reaches host files and runs code as root on the host: every container and Bastion itself are then in its hands',
    fix: 'upgrade runc (and the engine that ships it) to a version with the fix; a distribution package whose changelog names the CVE is counted as fixed',
    checks:
      'the engine\'s runc version (`docker version`, Components) against the versions that fixed CVE-2019-5736 (runc through 1.0-rc6, Docker before 18.09.2), CVE-2021-30465 (before 1.0.0-rc95), CVE-2024-21626 (before 1.1.12) and CVE-2025-31133, CVE-2025-52565, CVE-2025-52881 (before 1.2.8, 1.3.3, 1.4.0-rc.3); the engine version for CVE-2019-5736 when runc reports none. One finding per CVE. A Debian package whose changelog names the CVE counts as fixed (backport)',
    cis: docker('1.2.2', 'Ensure that the version of Docker is up to date'),
  },
  {
    id: 'docker.engine.socket-permissions',
    scope: 'docker-engine',
    severity: 'critical',
    title: 'the Docker socket is open to more than root and the docker group',
    gain: 'whoever can write to the Docker API socket is root on the host: they can start a privileged container with the host\'s disk mounted',
    fix: 'chown root:docker and chmod 660 the socket (dockerd does this when started with the default -G docker); keep the docker group to administrators',
    checks: 'owner, group and mode of the engine\'s unix socket: world-accessible (o+rw) is critical, any other owner than root, a group other than root or docker, or group/world bits beyond 660 is high',
    cis: docker('3.16', 'Ensure that the Docker socket file permissions are set to 660 or more restrictively'),
    lowered: 'high when only the owner or group is wrong, or the mode is wider than 660 without giving other users write access',
  },
  {
    id: 'docker.engine.icc',
    scope: 'docker-engine',
    severity: 'medium',
    title: 'inter-container communication is on for the default bridge',
    gain: 'every container on docker0 reaches every other one on every port, and sees them with an ARP scan: the first step of lateral movement (for containers Bastion does not protect)',
    fix: 'set "icc": false in /etc/docker/daemon.json and restart dockerd, or better run containers on user-defined networks that Bastion protects',
    checks: 'the default bridge network\'s option com.docker.network.bridge.enable_icc',
    cis: docker('2.2', 'Ensure network traffic is restricted between containers on the default bridge'),
  },
  {
    id: 'docker.engine.userland-proxy',
    scope: 'docker-engine',
    severity: 'low',
    title: 'the userland proxy is on',
    gain: 'connections to a published port that the proxy carries reach the container from the bridge gateway, i.e. from "host": a policy that lets the host in lets in every client of the port, whatever its real address',
    fix: 'set "userland-proxy": false in /etc/docker/daemon.json (or dockerd --userland-proxy=false) and restart dockerd',
    checks: 'dockerd\'s command line (/proc/PID/cmdline) and its daemon.json; the proxy is on unless one of them turns it off',
    cis: docker('2.16', 'Ensure Userland Proxy is Disabled'),
  },
  {
    id: 'docker.engine.live-restore',
    scope: 'docker-engine',
    severity: 'low',
    title: 'live restore is off',
    gain: 'anyone who can stop or crash dockerd stops every container with it (denial of service); Bastion\'s enforcement stays, the workloads do not',
    fix: 'set "live-restore": true in /etc/docker/daemon.json and reload dockerd',
    checks: 'LiveRestoreEnabled in `docker info`',
    cis: docker('2.15', 'Ensure live restore is enabled'),
  },
  {
    id: 'docker.engine.iptables',
    scope: 'docker-engine',
    severity: 'medium',
    title: 'Docker does not manage iptables',
    gain: 'no isolation rules between Docker networks and no NAT for them: containers of different networks reach each other through the host unless something else forbids it',
    fix: 'remove --iptables=false ("iptables": false) from dockerd\'s configuration and restart it',
    checks: 'dockerd\'s command line and daemon.json for --iptables=false',
    cis: docker('2.4', 'Ensure Docker is allowed to make changes to iptables'),
  },
  {
    id: 'docker.engine.userns-remap',
    scope: 'docker-engine',
    severity: 'low',
    title: 'user-namespace remapping is off',
    gain: 'root in a container is uid 0 on the host: whatever escapes a container (a runc CVE, a mounted host path) does so as root',
    fix: 'set "userns-remap": "default" in /etc/docker/daemon.json and restart dockerd (existing containers and images are recreated under the new root)',
    checks: 'SecurityOptions of `docker info` (name=userns)',
    cis: docker('2.9', 'Enable user namespace support'),
  },

  // ---------------------------------------------------------------- Docker containers
  {
    id: 'docker.container.privileged',
    scope: 'docker-container',
    severity: 'critical',
    title: 'container is privileged',
    gain: 'every capability, every host device, no seccomp and no AppArmor: it mounts the host disk and is root on the host; it can reconfigure its network, so Bastion cannot protect it',
    fix: 'recreate it without --privileged, adding only the capabilities it needs (--cap-add)',
    checks: 'HostConfig.Privileged',
    cis: docker('5.5', 'Ensure that privileged containers are not used'),
  },
  {
    id: 'docker.container.host-network',
    scope: 'docker-container',
    severity: 'critical',
    title: 'container uses the host\'s network namespace',
    gain: 'no interface of its own: it binds host ports, reaches every container through the bridges as the host does, and (with NET_RAW) sniffs the host\'s traffic; Bastion has no interface to guard',
    fix: 'recreate it on a bridge network (--network NAME) and publish the ports it serves',
    checks: 'HostConfig.NetworkMode = host',
    cis: docker('5.10', 'Ensure that the host\'s network namespace is not shared'),
  },
  {
    id: 'docker.container.host-pid',
    scope: 'docker-container',
    severity: 'high',
    title: 'container shares the host\'s PID namespace',
    gain: 'it sees every host process, their command lines and environment; with the same uid or CAP_SYS_PTRACE it signals or injects into them, and reaches the host file system through /proc/PID/root',
    fix: 'recreate it without --pid host',
    checks: 'HostConfig.PidMode = host',
    cis: docker('5.16', 'Ensure that the host\'s process namespace is not shared'),
  },
  {
    id: 'docker.container.host-ipc',
    scope: 'docker-container',
    severity: 'medium',
    title: 'container shares the host\'s IPC namespace',
    gain: 'it reads and writes the host\'s shared memory segments and message queues',
    fix: 'recreate it without --ipc host',
    checks: 'HostConfig.IpcMode = host',
    cis: docker('5.17', 'Ensure that the host\'s IPC namespace is not shared'),
  },
  {
    id: 'docker.container.host-uts',
    scope: 'docker-container',
    severity: 'low',
    title: 'container shares the host\'s UTS namespace',
    gain: 'it can change the host\'s hostname (with CAP_SYS_ADMIN) and learns it',
    fix: 'recreate it without --uts host',
    checks: 'HostConfig.UTSMode = host',
    cis: docker('5.21', 'Ensure that the host\'s UTS namespace is not shared'),
  },
  ...DANGEROUS_CAPABILITIES.map(
    (c): RuleInfo => ({
      id: capRuleId(c.cap),
      scope: 'docker-container',
      severity: c.severity,
      title: c.cap === 'ALL' ? 'container has every capability added (--cap-add ALL)' : `container has CAP_${c.cap} added`,
      gain: c.gain,
      fix: `recreate it without --cap-add ${c.cap}`,
      checks: `HostConfig.CapAdd contains ${c.cap === 'ALL' ? 'ALL' : `${c.cap} (or CAP_${c.cap})`}`,
      cis: docker('5.4', 'Ensure that Linux kernel capabilities are restricted within containers'),
    }),
  ),
  {
    id: 'docker.container.net-raw',
    scope: 'docker-container',
    severity: 'medium',
    title: 'container has CAP_NET_RAW (Docker\'s default set still includes it)',
    gain: 'raw sockets: forged ARP replies (poisoning its neighbours\' caches, then man-in-the-middle), forged source IP and MAC addresses, packet capture on its interface',
    fix: 'recreate it with --cap-drop NET_RAW (or --cap-drop ALL plus what it needs); ping still works through the unprivileged ICMP sockets Docker enables',
    checks:
      'the capability bounding set of the container\'s process (/proc/PID/status CapBnd) when the host is local, else Docker\'s default set with HostConfig.CapAdd and CapDrop applied. docker-bench-security does not report it: its 5.4 check strips NET_RAW from the capabilities it looks at',
    lowered: 'low when a running Bastion protects the container in enforce mode: source verification and the ARP handler drop what it forges',
  },
  {
    id: 'docker.container.docker-socket',
    scope: 'docker-container',
    severity: 'critical',
    title: 'the Docker socket is mounted into the container',
    gain: 'full control of the Docker engine from inside: start a privileged container with the host\'s disk, stop or change any container, Bastion\'s daemon included',
    fix: 'recreate it without the socket mount; a tool that needs the API should get a proxy that allows only the calls it needs',
    checks: 'Mounts: a bind mount whose source is the engine\'s socket (or /var/run, /run, a directory that holds it)',
    cis: docker('5.32', 'Ensure that the Docker socket is not mounted inside any containers'),
  },
  {
    id: 'docker.container.host-root',
    scope: 'docker-container',
    severity: 'critical',
    title: 'the host\'s root file system is mounted into the container',
    gain: 'read (and when writable, change) any host file: credentials, /etc/shadow, cron, the Docker and Bastion state; root on the host',
    fix: 'recreate it without the / bind mount; mount only the directories it needs, read-only where possible',
    checks: 'Mounts: a bind mount whose source is /',
    cis: docker('5.6', 'Ensure sensitive host system directories are not mounted on containers'),
  },
  {
    id: 'docker.container.sensitive-mount',
    scope: 'docker-container',
    severity: 'high',
    title: 'a sensitive host directory is mounted into the container',
    gain: 'host configuration, devices, kernel interfaces or BPF pins (Bastion\'s maps live in /sys/fs/bpf) from inside the container; writable, a way to the host',
    fix: 'recreate it without the bind mount of that directory',
    checks: 'Mounts: a bind mount whose source is /boot, /dev, /etc, /lib, /proc, /sys (or /sys/fs/bpf), /usr or /var/lib/docker, or a path under them',
    cis: docker('5.6', 'Ensure sensitive host system directories are not mounted on containers'),
    lowered: 'medium when the mount is read-only',
  },
  {
    id: 'docker.container.no-new-privileges',
    scope: 'docker-container',
    severity: 'low',
    title: 'container can gain privileges through setuid binaries',
    gain: 'a setuid or file-capability binary in the image raises a process to root (and its capabilities) inside the container',
    fix: 'recreate it with --security-opt no-new-privileges (or set "no-new-privileges": true in daemon.json for every container)',
    checks: 'HostConfig.SecurityOpt has no no-new-privileges, and dockerd does not set it by default (command line, daemon.json)',
    cis: docker('5.26', 'Ensure that the container is restricted from acquiring additional privileges'),
  },
  {
    id: 'docker.container.seccomp-unconfined',
    scope: 'docker-container',
    severity: 'high',
    title: 'container runs without seccomp',
    gain: 'every system call: the kernel\'s whole attack surface (keyctl, unshare, bpf, userfaultfd...) for an exploit that escapes the container',
    fix: 'recreate it without --security-opt seccomp=unconfined (Docker\'s default profile applies)',
    checks: 'HostConfig.SecurityOpt seccomp=unconfined (privileged containers are reported as such)',
    cis: docker('5.22', 'Ensure the default seccomp profile is not Disabled'),
  },
  {
    id: 'docker.container.apparmor-unconfined',
    scope: 'docker-container',
    severity: 'medium',
    title: 'container runs without AppArmor on a host that has it',
    gain: 'no mandatory access control: writes to /proc and /sys files and mounts that the docker-default profile denies',
    fix: 'recreate it without --security-opt apparmor=unconfined (docker-default applies)',
    checks: 'AppArmorProfile is unconfined (or empty) while the engine reports AppArmor in SecurityOptions; hosts without AppArmor are not checked',
    cis: docker('5.2', 'Ensure that, if applicable, an AppArmor Profile is enabled'),
  },
  {
    id: 'docker.container.ports-all-addresses',
    scope: 'docker-container',
    severity: 'medium',
    title: 'a port is published on every host address',
    gain: 'the port is reachable from every network the host is on, not only the one meant to reach it',
    fix: 'publish it on one address: -p 127.0.0.1:HOSTPORT:PORT (or the address of the interface that should reach it)',
    checks: 'NetworkSettings.Ports (HostConfig.PortBindings when not running): a binding with HostIp empty, 0.0.0.0 or ::',
    cis: docker('5.14', 'Ensure that incoming container traffic is bound to a specific host interface'),
  },
  {
    id: 'docker.container.shared-netns',
    scope: 'docker-container',
    severity: 'medium',
    title: 'container shares another container\'s network namespace',
    gain: 'the same interfaces, addresses and loopback as that container: it reaches its local-only services and (with NET_RAW) sees its traffic; to Bastion both are one endpoint',
    fix: 'recreate it on its own network (--network NAME) and name the dependency in a policy',
    checks: 'HostConfig.NetworkMode = container:ID',
  },

  // ---------------------------------------------------------------- Bastion coverage
  {
    id: 'bastion.not-running',
    scope: 'bastion',
    severity: 'high',
    title: 'no Bastion daemon runs for this pin path',
    gain: 'no container is protected by a running daemon: new containers get no stack, and enforcement left pinned by a previous run is not kept true',
    fix: 'start it: bastion run --docker --config FILE (or check --pin-path)',
    checks: 'the daemon\'s API socket for --pin-path answers /v1/status',
  },
  {
    id: 'bastion.unprotected',
    scope: 'bastion',
    severity: 'high',
    title: 'container is not protected by Bastion',
    gain: 'its traffic is not checked: it can scan, spoof and reach its neighbours, and be reached, as on a plain bridge',
    fix: 'remove what makes it unprotectable (the reason says which), or run it on a bridge network a Bastion daemon follows',
    checks: 'the Docker adapter\'s own mapping (src/platform/docker/mapping.ts: host network, shared netns, privileged, CAP_NET_ADMIN, non-bridge drivers) and, with a running daemon, its /v1/status (endpoints, unprotected)',
  },
  {
    id: 'bastion.stack-missing',
    scope: 'bastion',
    severity: 'critical',
    title: 'a protected container\'s stack is not attached',
    gain: 'the container\'s traffic passes unchecked while the daemon believes it protected',
    fix: 'look at the daemon\'s log; restarting the daemon re-attaches every stack',
    checks: 'stack.ok of each endpoint in the daemon\'s /v1/status',
  },
  {
    id: 'bastion.no-policy',
    scope: 'bastion',
    severity: 'medium',
    title: 'no policy names the container',
    gain: 'in audit mode it can talk to everything and be reached by everything; in enforce mode it can talk to nothing (isolated, likely broken)',
    fix: 'add a policy for it (bastion policy add NAME --from ... --to ...), or leave it isolated on purpose',
    checks: 'every rule\'s subject selector (the policy compiler\'s rules, from the config file, runtime policies and a Compose file) against the container\'s endpoint labels',
    lowered: 'low in enforce mode',
  },
  {
    id: 'bastion.wide-policy',
    scope: 'bastion',
    severity: 'high',
    title: 'a policy allows the world or the host on every port',
    gain: 'the host isolation or the container isolation of the selected containers is gone for that direction: every port of the host (or of the container, from anywhere) is open',
    fix: 'name the ports (ports: ["53/udp"]) and the narrowest peer (a selector or a CIDR) the containers need',
    checks: 'policies whose other end is host or a CIDR of prefix 0 (the world), with no ports (every protocol and port) or a port range covering 1-65535',
  },
  {
    id: 'bastion.selector-matches-nothing',
    scope: 'bastion',
    severity: 'low',
    title: 'a policy selector matches no container',
    gain: 'the policy does nothing now; the first container started with matching labels gets its access, whoever starts it',
    fix: 'correct the selector (a typo?) or remove the policy',
    checks: 'each container-selector end of each policy against the labels of the running containers (Docker)',
  },

  // ---------------------------------------------------------------- Kubernetes
  {
    id: 'k8s.namespace.no-networkpolicy',
    scope: 'kubernetes',
    severity: 'high',
    title: 'namespace has no NetworkPolicy',
    gain: 'every pod of the namespace accepts connections from every pod of the cluster, and opens connections anywhere',
    fix: 'add a default-deny policy (podSelector: {}, policyTypes: [Ingress, Egress]) and policies for the connections the pods need',
    checks: 'NetworkPolicies of each namespace with pods',
    cis: k8s('5.3.2', 'Ensure that all Namespaces have NetworkPolicies defined'),
  },
  {
    id: 'k8s.namespace.no-default-deny',
    scope: 'kubernetes',
    severity: 'medium',
    title: 'namespace has NetworkPolicies but no default deny',
    gain: 'pods no policy selects (today\'s, and every new one) stay open in that direction',
    fix: 'add a policy with podSelector: {} and the missing policy types, without rules',
    checks: 'a policy with an empty podSelector, the direction in its policyTypes and no rules for it, per direction (Ingress, Egress)',
    cis: k8s('5.3.2', 'Ensure that all Namespaces have NetworkPolicies defined'),
  },
  {
    id: 'k8s.pod.not-selected',
    scope: 'kubernetes',
    severity: 'medium',
    title: 'pod is selected by no NetworkPolicy for ingress',
    gain: 'every pod of the cluster can connect to it on every port',
    fix: 'give it a label an ingress policy selects, or add a default-deny ingress policy to its namespace',
    checks: 'the podSelector of each Ingress policy of the pod\'s namespace against its labels, in namespaces that have policies (a namespace without any is k8s.namespace.no-networkpolicy); hostNetwork pods are k8s.pod.host-network',
    cis: k8s('5.3.2', 'Ensure that all Namespaces have NetworkPolicies defined'),
  },
  {
    id: 'k8s.pod.privileged',
    scope: 'kubernetes',
    severity: 'critical',
    title: 'pod has a privileged container',
    gain: 'all capabilities and devices of the node: root on the node, and around any network policy',
    fix: 'remove securityContext.privileged; add only the capabilities needed',
    checks: 'securityContext.privileged of every container and init container',
    cis: k8s('5.2.2', 'Minimize the admission of privileged containers'),
  },
  {
    id: 'k8s.pod.host-network',
    scope: 'kubernetes',
    severity: 'high',
    title: 'pod uses the node\'s network namespace',
    gain: 'the node\'s interfaces: NetworkPolicy does not apply to it, it binds node ports and reaches node-local services',
    fix: 'remove spec.hostNetwork',
    checks: 'spec.hostNetwork',
    cis: k8s('5.2.5', 'Minimize the admission of containers wishing to share the host network namespace'),
  },
  {
    id: 'k8s.pod.host-pid',
    scope: 'kubernetes',
    severity: 'high',
    title: 'pod shares the node\'s PID namespace',
    gain: 'it sees every process of the node and, with the same uid or CAP_SYS_PTRACE, injects into them',
    fix: 'remove spec.hostPID',
    checks: 'spec.hostPID',
    cis: k8s('5.2.3', 'Minimize the admission of containers wishing to share the host process ID namespace'),
  },
  {
    id: 'k8s.pod.host-ipc',
    scope: 'kubernetes',
    severity: 'medium',
    title: 'pod shares the node\'s IPC namespace',
    gain: 'the node\'s shared memory and message queues',
    fix: 'remove spec.hostIPC',
    checks: 'spec.hostIPC',
    cis: k8s('5.2.4', 'Minimize the admission of containers wishing to share the host IPC namespace'),
  },
  {
    id: 'k8s.pod.net-raw',
    scope: 'kubernetes',
    severity: 'medium',
    title: 'container does not drop NET_RAW',
    gain: 'raw sockets: ARP and IP spoofing towards the pods of its node, packet capture on its interface',
    fix: 'securityContext.capabilities.drop: ["ALL"] (or ["NET_RAW"]) on the container',
    checks: 'securityContext.capabilities.drop of every container (ALL or NET_RAW); an added NET_RAW counts as not dropped',
    cis: k8s('5.2.8', 'Minimize the admission of containers with the NET_RAW capability'),
  },
  {
    id: 'k8s.pod.dangerous-capability',
    scope: 'kubernetes',
    severity: 'high',
    title: 'container adds a capability that breaks isolation',
    gain: 'see the capability: SYS_ADMIN, SYS_MODULE and ALL lead to the node; NET_ADMIN reconfigures the pod network; SYS_PTRACE, BPF and DAC_READ_SEARCH reach other processes, the kernel or host files',
    fix: 'remove it from securityContext.capabilities.add',
    checks: 'securityContext.capabilities.add of every container against ALL, SYS_ADMIN, SYS_MODULE, NET_ADMIN, BPF, SYS_PTRACE, DAC_READ_SEARCH',
    cis: k8s('5.2.9', 'Minimize the admission of containers with added capabilities'),
  },
  {
    id: 'k8s.pod.token-automount',
    scope: 'kubernetes',
    severity: 'low',
    title: 'pod mounts a service account token it does not need',
    gain: 'a credential for the API server in the pod\'s file system, for whoever gets code execution in it',
    fix: 'automountServiceAccountToken: false on the pod (or on its service account)',
    checks: 'automountServiceAccountToken of the pod, then of its ServiceAccount (default true); "not needed" means no RoleBinding or ClusterRoleBinding in the input names the account (or its groups)',
    cis: k8s('5.1.6', 'Ensure that Service Account Tokens are only mounted where necessary'),
  },
  {
    id: 'k8s.rbac.cluster-admin',
    scope: 'kubernetes',
    severity: 'critical',
    title: 'a workload service account is bound to cluster-admin',
    gain: 'whoever runs code in one of its pods controls the whole cluster',
    fix: 'bind the account to a Role with only the verbs and resources it uses',
    checks: 'RoleBindings and ClusterRoleBindings whose roleRef is the ClusterRole cluster-admin and whose subjects include a service account that a pod in the input uses',
    cis: k8s('5.1.1', 'Ensure that the cluster-admin role is only used where required'),
  },
  {
    id: 'k8s.rbac.wildcard',
    scope: 'kubernetes',
    severity: 'high',
    title: 'a workload service account has a role with wildcards',
    gain: 'every verb or resource of an API group, including the ones added later',
    fix: 'list the verbs, resources and API groups explicitly',
    checks: '"*" in the verbs, resources or apiGroups of a rule of a role bound to a workload service account',
    cis: k8s('5.1.3', 'Minimize wildcard use in Roles and ClusterRoles'),
  },
  {
    id: 'k8s.rbac.secrets-read',
    scope: 'kubernetes',
    severity: 'high',
    title: 'a workload service account can read secrets',
    gain: 'every secret in reach: other accounts\' tokens, database passwords, TLS keys',
    fix: 'remove get, list and watch on secrets, or limit them with resourceNames',
    checks: 'get, list or watch on secrets (core API group) in a role bound to a workload service account',
    cis: k8s('5.1.2', 'Minimize access to secrets'),
  },
  {
    id: 'k8s.rbac.pods-exec',
    scope: 'kubernetes',
    severity: 'high',
    title: 'a workload service account can exec into pods',
    gain: 'a shell in other pods: their network identity, their secrets, their NetworkPolicy exceptions',
    fix: 'remove create and get on pods/exec and pods/attach',
    checks: 'create or get on pods/exec or pods/attach in a role bound to a workload service account',
  },
  {
    id: 'k8s.rbac.networkpolicy-write',
    scope: 'kubernetes',
    severity: 'high',
    title: 'a workload service account can change NetworkPolicies',
    gain: 'it removes or widens the policies that isolate pods: the network isolation is its to undo',
    fix: 'remove create, update, patch and delete on networkpolicies',
    checks: 'create, update, patch, delete or deletecollection on networkpolicies (networking.k8s.io) in a role bound to a workload service account',
  },
];

export const RULES: ReadonlyMap<string, RuleInfo> = new Map(RULE_LIST.map((r) => [r.id, r]));
export const RULE_IDS: readonly string[] = RULE_LIST.map((r) => r.id);

export function rule(id: string): RuleInfo {
  const r = RULES.get(id);
  if (!r) throw new Error(`audit: no rule ${id}`);
  return r;
}

/** A finding of rule `id`: its severity, title, gain, fix and CIS item, unless overridden. */
export function finding(
  id: string,
  object: AuditObject,
  evidence: Evidence[],
  o: { severity?: Severity; fix?: string; gain?: string } = {},
): Finding {
  const r = rule(id);
  return {
    id,
    severity: o.severity ?? r.severity,
    title: r.title,
    object,
    gain: o.gain ?? r.gain,
    evidence,
    fix: o.fix ?? r.fix,
    ...(r.cis ? { cis: cisText(r.cis) } : {}),
  };
}
