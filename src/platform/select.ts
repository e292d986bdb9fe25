/**
 * Which platform `bastion run` follows, from its flags: Docker (--docker,
 * optionally limited with --select), plus policy from a Compose file
 * (--compose). The file config is handled by the daemon itself.
 */
import { DEFAULT_INPUT_MAX_BYTES, readInputFile } from '../policy/input-file.js';
import type { PlatformEvent, PlatformSource } from '../manager/endpoint.js';
import type { PolicySet } from '../policy/model.js';
import type { PublishedPortsMode } from '../policy/published.js';
import { CliError, EXIT } from '../cli/errors.js';
import { parseLabelAssignment } from '../policy/selector.js';

export interface PlatformOptions {
  docker?: boolean;
  compose?: string;
  select?: string[];
  /** what a published port lets in (default allow) */
  publishedPorts?: PublishedPortsMode;
}

export function parseSelect(items: string[] | undefined): Record<string, string> | undefined {
  if (!items?.length) return undefined;
  const out: Record<string, string> = {};
  for (const item of items) {
    const label = parseLabelAssignment(item);
    if (!label) throw new CliError(`--select ${item}: expected LABEL=VALUE`, EXIT.usage);
    out[label.key] = label.value;
  }
  return out;
}

/**
 * Docker as a PlatformSource. The bridge port watcher starts first: a new
 * container's veth is reported (and guarded with a drop-all stack) before
 * the container's process runs; the endpoint entry follows with Docker's
 * start event. A port that turns out to belong to an unprotected or
 * unselected container is released.
 */
async function dockerSource(select: Record<string, string> | undefined): Promise<PlatformSource> {
  // Loaded only when asked for: the Docker client is a large part of the daemon's memory.
  const { DockerPlatform, watchDockerBridgePorts } = await import('./docker/index.js');
  const platform = new DockerPlatform({ select });
  const watcher = watchDockerBridgePorts(platform);
  return {
    name: 'docker',
    async start(onEvent: (ev: PlatformEvent) => void) {
      watcher.on('added', (port: { ifindex: number }) => {
        const owner = platform.portOwner(port.ifindex);
        if (!owner || owner.kind === 'endpoint') onEvent({ type: 'port-guard', hostIfindex: port.ifindex });
      });
      watcher.on('removed', (port: { ifindex: number }) => onEvent({ type: 'port-release', hostIfindex: port.ifindex }));
      platform.on('port', (ifindex: number, owner: { kind: string } | undefined) => {
        if (owner && owner.kind !== 'endpoint') onEvent({ type: 'port-release', hostIfindex: ifindex });
      });
      await watcher.start();
      await platform.start(onEvent);
    },
    async stop() {
      await watcher.stop();
      await platform.stop();
    },
  };
}

export async function platformFromOptions(
  opts: PlatformOptions,
): Promise<{ source?: PlatformSource; extraPolicy?: () => Promise<PolicySet | undefined> } | undefined> {
  if (!opts.docker && !opts.compose) return undefined;
  if (opts.select && !opts.docker) throw new CliError('--select goes with --docker', EXIT.usage);
  const out: { source?: PlatformSource; extraPolicy?: () => Promise<PolicySet | undefined> } = {};
  if (opts.docker) out.source = await dockerSource(parseSelect(opts.select));
  if (opts.compose) {
    const file = opts.compose;
    out.extraPolicy = async () => {
      const { composeTextToPolicies, composeToPolicySet } = await import('../policy/compose.js');
      const text = readInputFile(file, { maxBytes: DEFAULT_INPUT_MAX_BYTES });
      // Following Docker, the containers' real bindings say what is published (the
      // daemon's published-port policies); the file's ports: would only repeat them.
      return composeToPolicySet(composeTextToPolicies(text, { file, publishedPorts: opts.docker ? 'deny' : (opts.publishedPorts ?? 'allow') }));
    };
  }
  return out;
}
