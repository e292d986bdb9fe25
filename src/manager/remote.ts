/**
 * An endpoint on another node of the cluster, as the manager's network map
 * holds it: identity, address, MAC, the node's underlay address, labels. It
 * has no stack and no slice of its own here; it is a peer, and only the
 * local endpoints that depend on it (either way) bring its entry into this
 * node's maps (bastion_remote).
 */
export interface RemoteEndpoint {
  /** `${node}/${key}`: unique in the cluster */
  id: string;
  node: string;
  /** the node's underlay address: where VXLAN for it goes */
  nodeIp: string;
  name: string;
  identity: number;
  ipv4: string;
  mac: string;
  labels: Readonly<Record<string, string>>;
  namedPorts?: Readonly<Record<string, { port: number; protocol: 'tcp' | 'udp' | 'sctp' }>>;
}
