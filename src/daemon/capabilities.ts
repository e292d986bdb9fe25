/**
 * The Linux capabilities `bastion run` needs, and nothing more: found by
 * running the daemon under `setpriv --bounding-set` with one capability
 * taken away at a time (docs/operations.md has the table of what fails
 * without each). The systemd unit (contrib/systemd/bastion.service) grants
 * exactly this list, a unit test holds the two together, and the
 * integration tests run every daemon with only these.
 *
 * CAP_SYS_ADMIN implies CAP_BPF and CAP_PERFMON for the kernel (bpf_capable()
 * and perfmon_capable() accept it), and it cannot be left out: entering a
 * container's network namespace (setns) and mounting bpffs need it. CAP_BPF
 * and CAP_PERFMON are granted by name all the same, so that what the daemon
 * uses for BPF is visible in the unit.
 */
import { readFileSync } from 'node:fs';

export interface Capability {
  name: string;
  /** bit number (linux/capability.h) */
  bit: number;
  /** what the daemon does with it */
  why: string;
  /**
   * needed in every mode, or only when containers' namespaces are opened
   * through /proc/PID/ns/net (always with --docker; a config file's netns
   * given as a path): named namespaces under /run/netns do not need it
   */
  needed: 'always' | 'proc-netns';
}

export const DAEMON_CAPABILITIES: readonly Capability[] = [
  { name: 'CAP_BPF', bit: 39, why: 'load the tc programs and create, pin and update the maps', needed: 'always' },
  { name: 'CAP_PERFMON', bit: 38, why: 'verify the programs as privileged ones (pointer arithmetic, no Spectre masking)', needed: 'always' },
  { name: 'CAP_NET_ADMIN', bit: 12, why: 'attach tc programs (clsact) to the host-side veths, follow links and addresses through netlink', needed: 'always' },
  { name: 'CAP_SYS_ADMIN', bit: 21, why: "enter containers' network namespaces (setns) to find their interfaces; mount bpffs when it is not mounted", needed: 'always' },
  {
    name: 'CAP_SYS_PTRACE',
    bit: 19,
    why: "open a container's namespace as /proc/PID/ns/net when its process runs as another user or with capabilities the daemon lacks (every Docker container; a config's netns given as a /proc path)",
    needed: 'proc-netns',
  },
];

/** The capability names `setpriv --bounding-set` and friends take: "+bpf,+perfmon,...". */
export function setprivCapList(caps: readonly Capability[] = DAEMON_CAPABILITIES): string {
  return caps.map((c) => `+${c.name.slice(4).toLowerCase()}`).join(',');
}

/** The effective capability set of this process (CapEff of /proc/self/status). */
export function effectiveCapabilities(status = readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

/**
 * The capabilities a daemon in this mode needs and does not have. The
 * kernel's implications are honoured: CAP_SYS_ADMIN stands in for CAP_BPF
 * and CAP_PERFMON (as bpf_capable() and perfmon_capable() do). Without
 * --docker, CAP_SYS_PTRACE is not required at start: a config that names a
 * /proc/PID/ns/net path without it is rejected at discovery, saying so.
 */
export function missingCapabilities(effective: bigint, o: { docker: boolean }): Capability[] {
  const has = (bit: number) => (effective & (1n << BigInt(bit))) !== 0n;
  const sysAdmin = has(21);
  return DAEMON_CAPABILITIES.filter((c) => {
    if (c.needed === 'proc-netns' && !o.docker) return false;
    if ((c.name === 'CAP_BPF' || c.name === 'CAP_PERFMON') && sysAdmin) return false;
    return !has(c.bit);
  });
}
