/**
 * Known container escapes in runc, by version. A version is vulnerable when
 * it is older than the fix of its own release line, or older than every
 * fixed line (a line newer than all of them is fixed).
 *
 * runc versions look like 1.0.0-rc6, 1.0-rc6 (how runc 1.0-rc6 printed
 * itself), 1.0.0-rc95, 1.1.5+ds1 (a distribution build), 1.4.0-rc.3. The
 * comparison is written here rather than with a semver library because
 * runc's release candidates are "rc95", which semver orders as text
 * (rc95 < rc7).
 */

export interface RuncCve {
  id: string;
  /** the first fixed version of each release line */
  fixedIn: string[];
  summary: string;
}

export const RUNC_ESCAPES: readonly RuncCve[] = [
  {
    id: 'CVE-2019-5736',
    fixedIn: ['1.0.0-rc7'],
    summary: 'a container process overwrites the host\'s runc binary through /proc/self/exe and runs as root on the host (runc through 1.0-rc6, Docker before 18.09.2)',
  },
  {
    id: 'CVE-2021-30465',
    fixedIn: ['1.0.0-rc95'],
    summary: 'a symlink-exchange race in volume mounting mounts a host path into the container',
  },
  {
    id: 'CVE-2024-21626',
    fixedIn: ['1.1.12'],
    summary: '"Leaky Vessels": a file descriptor of the host leaks into the container (WORKDIR /proc/self/fd/N), giving access to the host file system',
  },
  {
    id: 'CVE-2025-31133',
    fixedIn: ['1.2.8', '1.3.3', '1.4.0-rc.3'],
    summary: 'the /dev/null used to mask paths is replaced by a symlink: runc bind-mounts a host path the container writes to (procfs files, leading to host root)',
  },
  {
    id: 'CVE-2025-52565',
    fixedIn: ['1.2.8', '1.3.3', '1.4.0-rc.3'],
    summary: 'a race in the /dev/console bind mount redirects it to a procfs file the container then writes',
  },
  {
    id: 'CVE-2025-52881',
    fixedIn: ['1.2.8', '1.3.3', '1.4.0-rc.3'],
    summary: 'runc\'s own writes to procfs (sysctls, LSM labels) are redirected to other files, bypassing LSM confinement and reaching host files',
  },
];

/** Docker before 18.09.2 shipped a runc vulnerable to CVE-2019-5736. */
export const DOCKER_CVE_2019_5736_FIXED = '18.9.2';

interface Version {
  nums: [number, number, number];
  /** release candidate number; undefined for a release (which sorts after its candidates) */
  rc?: number;
}

/** Parses "1.1.5+ds1", "1.0-rc6", "1.0.0-rc95", "1.4.0-rc.3", "v1.2.8", "18.09.2"; undefined when it is not a version. */
export function parseVersion(text: string): Version | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-rc\.?(\d+))?(?:[-+~].*)?$/.exec(text.trim());
  if (!m) return undefined;
  const v: Version = { nums: [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)] };
  if (m[4] !== undefined) v.rc = Number(m[4]);
  return v;
}

export function compareVersions(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a.nums[i] !== b.nums[i]) return a.nums[i]! - b.nums[i]!;
  if (a.rc === b.rc) return 0;
  if (a.rc === undefined) return 1;
  if (b.rc === undefined) return -1;
  return a.rc - b.rc;
}

/** Is `version` older than the fix of its release line (see the module comment)? */
export function vulnerableTo(version: Version, cve: RuncCve): boolean {
  const fixes = cve.fixedIn.map((f) => parseVersion(f)!);
  const line = fixes.find((f) => f.nums[0] === version.nums[0] && f.nums[1] === version.nums[1]);
  if (line) return compareVersions(version, line) < 0;
  const oldest = fixes.reduce((a, b) => (compareVersions(a, b) <= 0 ? a : b));
  return compareVersions(version, oldest) < 0;
}

/** The escapes a runc version is vulnerable to, without those named in `fixedByPackage` (a distribution backport). */
export function runcEscapes(versionText: string, fixedByPackage: readonly string[] = []): RuncCve[] | undefined {
  const v = parseVersion(versionText);
  if (!v) return undefined;
  return RUNC_ESCAPES.filter((c) => vulnerableTo(v, c) && !fixedByPackage.includes(c.id));
}

/** Does a Docker engine of this version bundle a runc vulnerable to CVE-2019-5736? */
export function dockerBefore18092(versionText: string): boolean | undefined {
  const v = parseVersion(versionText);
  if (!v) return undefined;
  return compareVersions(v, parseVersion(DOCKER_CVE_2019_5736_FIXED)!) < 0;
}

/** CVE ids a distribution changelog names (Debian's changelog.Debian of the installed package). */
export function cvesInChangelog(text: string): string[] {
  return [...new Set(text.match(/CVE-\d{4}-\d{4,}/g) ?? [])].sort();
}

/** The version of the newest entry of a Debian changelog ("runc (1.1.5+ds1-1+deb12u1) bookworm-security; ..."). */
export function changelogVersion(text: string): string | undefined {
  return /^\S+ \(([^)]+)\)/.exec(text)?.[1];
}
