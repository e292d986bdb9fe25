/** Looks inside a container's network namespace (read-only). */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseIpLinkJson, type NetnsLink } from './mapping.js';

const run = promisify(execFile);

/**
 * The interfaces of the network namespace at `netnsPath` (loopback left out),
 * with the host-side peer ifindex of each veth: `nsenter --net=PATH ip -j link`.
 */
export async function listNetnsLinks(netnsPath: string): Promise<NetnsLink[]> {
  const { stdout } = await run('nsenter', [`--net=${netnsPath}`, 'ip', '-j', 'link', 'show'], { timeout: 5000 });
  return parseIpLinkJson(stdout);
}
