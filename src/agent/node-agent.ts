/** The node as the manager sees it: interface discovery and host addresses. */
import type { Discovered, NodePort } from '../manager/ports.js';
import type { EndpointSpec } from '../manager/endpoint.js';
import { HostLinks, discoverInterface } from './netns.js';
import { listHostLocalAddresses } from './host-addresses.js';

export class NodeAgent implements NodePort {
  private readonly hostLinks = new HostLinks();

  async discover(spec: EndpointSpec): Promise<Discovered> {
    const d = await discoverInterface(spec.netns, spec.interface || 'eth0', this.hostLinks);
    return {
      ipv4: spec.ipv4 ?? d.ipv4,
      prefixLen: d.prefixLen,
      mac: (spec.mac ?? d.mac).toLowerCase(),
      hostIfindex: d.peerIfindex,
      hostIfname: d.hostIfname,
      bridge: d.bridge,
      gwMac: d.gwMac,
      gateway: d.gateway,
    };
  }

  hostAddresses(): Promise<string[]> {
    return listHostLocalAddresses();
  }
}
