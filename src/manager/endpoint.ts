/**
 * What a platform adapter (config file, Docker, Kubernetes) tells the manager
 * about a container interface it wants protected, and what it reports about
 * containers it cannot protect.
 */

import type { PublishedPort } from '../policy/published.js';

/** How to reach a container's network namespace. */
export type NetnsRef =
  /** a name under /run/netns (ip netns) */
  | { kind: 'name'; name: string }
  /** a path such as /proc/1234/ns/net or /run/docker/netns/abcd */
  | { kind: 'path'; path: string };

/** A container interface to protect, as a platform describes it. */
export interface EndpointSpec {
  /** unique and stable for the life of this interface: "web", "docker:<id>/<network>", "k8s:ns/pod" */
  key: string;
  /** human name used in logs and status: "web", "ns/pod" */
  name: string;
  netns: NetnsRef;
  /** container-side interface name, default eth0 */
  interface: string;
  labels: Record<string, string>;
  /** per-endpoint mode override */
  mode?: 'enforce' | 'audit';
  /** values a platform already knows; discovery fills in whatever is missing */
  ipv4?: string;
  mac?: string;
  hostIfindex?: number;
  /** Kubernetes named container ports ("http" -> 8080/TCP) */
  namedPorts?: Record<string, { port: number; protocol: 'tcp' | 'udp' | 'sctp' }>;
  /** container ports published on the host (docker run -p): let in as src/policy/published.ts says */
  published?: PublishedPort[];
}

/** A discovered, fully-known endpoint, as the manager keeps it. */
export interface Endpoint extends EndpointSpec {
  identity: number;
  ipv4: string;
  mac: string;
  hostIfindex: number;
  hostIfname: string;
  /** MAC of the bridge behind the host-side veth (answers ARP for the gateway) */
  gwMac: string;
  gateway?: string;
  bridge?: string;
}

/** A container the platform sees but Bastion cannot protect. */
export interface UnprotectedContainer {
  key: string;
  name: string;
  reason: string;
}

/** Events a platform adapter emits. */
export type PlatformEvent =
  | { type: 'upsert'; spec: EndpointSpec }
  | { type: 'remove'; key: string }
  | { type: 'unprotected'; container: UnprotectedContainer }
  | { type: 'unprotected-gone'; key: string }
  /** a new host-side veth of a container about to start: guard it (drop-all) until its endpoint is known */
  | { type: 'port-guard'; hostIfindex: number }
  /** that veth is gone, or belongs to a container Bastion must leave alone */
  | { type: 'port-release'; hostIfindex: number }
  /** the adapter has reported everything it knows at start-up (or after a resync) */
  | { type: 'synced'; keys: string[] };

/** A platform that reports endpoints as events (Docker, Kubernetes); the daemon starts and stops it. */
export interface PlatformSource {
  name: string;
  start(onEvent: (ev: PlatformEvent) => void): Promise<void>;
  stop(): Promise<void>;
}
