/** Docker platform: the adapter (Engine API → PlatformEvents) and the bridge port watcher. */
export { DockerPlatform, defaultDockerSocket, type DockerPlatformOptions, type DockerPlatformLogger, type PortOwner } from './platform.js';
export {
  BridgePortWatcher,
  DOCKER_BRIDGE_PATTERN,
  parseMonitorLine,
  parseLinkList,
  type BridgePort,
  type BridgePortWatcherOptions,
  type LinkMessage,
} from './bridge-ports.js';
export {
  COMPOSE_PROJECT_LABEL,
  COMPOSE_SERVICE_LABEL,
  DOCKER_NETWORK_LABEL,
  bridgeDeviceOf,
  containerUnprotectedReason,
  desiredForContainer,
  endpointKey,
  parseIpLinkJson,
  publishedPortsOf,
  type ContainerInspect,
  type DockerNetwork,
  type NetnsLink,
} from './mapping.js';
export { listNetnsLinks } from './netns.js';

import { BridgePortWatcher, DOCKER_BRIDGE_PATTERN, type BridgePortWatcherOptions } from './bridge-ports.js';
import type { DockerPlatform } from './platform.js';

/**
 * A BridgePortWatcher that follows the bridges of `platform`: Docker's
 * default names (docker0, br-<id12>) from the first instant, plus any bridge
 * a network renamed with com.docker.network.bridge.name, as soon as the
 * platform lists it. Call start() on the result (before platform.start(),
 * so that no port is missed).
 */
export function watchDockerBridgePorts(platform: DockerPlatform, o: Omit<BridgePortWatcherOptions, 'bridges'> = {}): BridgePortWatcher {
  let extra = new Set(platform.bridgeDevices());
  const watcher = new BridgePortWatcher({ ...o, bridges: (b) => DOCKER_BRIDGE_PATTERN.test(b) || extra.has(b) });
  platform.on('bridges', (bridges: string[]) => {
    extra = new Set(bridges);
    void watcher.setBridges((b) => DOCKER_BRIDGE_PATTERN.test(b) || extra.has(b));
  });
  return watcher;
}
