/**
 * The API's contract, in one place: what the daemon's services answer
 * (typed outcomes), what goes over the socket (answers, the one error
 * body, the flow stream's lines), shared by the server (src/api/app.ts),
 * the services (src/daemon) and the client (src/api/client.ts, the CLI).
 *
 * Services never choose an HTTP status: they say why something failed
 * (FailureCode) and the HTTP layer alone maps that to a status code.
 */
import type { FlowRecord } from '../flows/record.js';
import type { StatusAudit } from '../audit/daemon-audit.js';
import type { LearnedPolicy } from '../learn/learn.js';
import type { ReplayedFlow } from '../learn/replay.js';

export type { FlowEnd, FlowRecord, FlowVerdict } from '../flows/record.js';
/** @deprecated the name before issue 14: FlowEnd */
export type { FlowEnd as FlowPeer } from '../flows/record.js';

// --------------------------------------------------------------- outcomes

/** Why a service refused or failed a request. */
export type FailureCode =
  /** the input does not validate (a policies document, a config file) */
  | 'invalid'
  /** the input is valid but clashes with what is in force (a config-file policy's name) */
  | 'conflict'
  /** it names something that does not exist */
  | 'not-found'
  /** the request is incomplete (no names to delete) */
  | 'bad-request'
  /** the request body is over the limit */
  | 'too-large'
  /** the daemon is shutting down and starts no change */
  | 'stopping'
  /** valid input, but applying it failed */
  | 'failed';

export interface Failure {
  ok: false;
  code: FailureCode;
  /** every message the user should read, each naming file, object and field where there is one */
  errors: string[];
}

/** What a service answers: its value, or why it failed. */
export type Outcome<T> = { ok: true; value: T } | Failure;

export function succeed<T>(value: T): Outcome<T> {
  return { ok: true, value };
}

export function fail(code: FailureCode, errors: string[]): Failure {
  return { ok: false, code, errors };
}

// ----------------------------------------------------------------- errors

/**
 * Failures the HTTP layer adds: no such route, an unexpected exception; and
 * those of the console's server (`bastion ui`, src/ui/server.ts): no or a
 * wrong access token, a request from another origin or host, no daemon behind it.
 */
export type ErrorCode = FailureCode | 'no-route' | 'internal' | 'unauthorized' | 'forbidden' | 'unreachable';

/** The body of every error answer (status >= 400). */
export interface ErrorBody {
  ok: false;
  error: { code: ErrorCode; message: string };
  /** the same messages one by one (what the CLI prints) */
  errors: string[];
}

export function errorBody(code: ErrorCode, errors: string[]): ErrorBody {
  return { ok: false, error: { code, message: errors.join('\n') }, errors };
}

export function isErrorBody(body: unknown): body is ErrorBody {
  return typeof body === 'object' && body !== null && (body as ErrorBody).ok === false && typeof (body as ErrorBody).error === 'object';
}

// ---------------------------------------------------------------- answers

/** POST /v1/reload */
export type ReloadResult = Record<string, never>;

/** One policy of a POST /v1/policies */
export interface PolicyChange {
  name: string;
  /** unchanged: a config-file policy given again exactly as the file has it (policy list -o yaml fed back) */
  action: 'created' | 'replaced' | 'unchanged';
}

/** POST /v1/policies: what changed, or (dryRun=1) what would change */
export type PolicyAddResult = { dryRun: true; policies: PolicyChange[] } | { policies: PolicyChange[]; entries: number; ms: number };

/** DELETE /v1/policies/NAME, DELETE /v1/policies?name=... */
export interface PolicyDeleteResult {
  deleted: string[];
  entries: number;
  ms: number;
}

/** POST /v1/shutdown: the daemon that is stopping (enforcement stays in place) */
export interface ShutdownResult {
  pid: number;
}

/** A successful answer to a change: { ok: true, ...result }. */
export type Done<T> = { ok: true } & T;

/** GET /v1/policies: one row per policy in force */
export interface PolicyRow {
  name: string;
  source: 'file' | 'api' | 'platform' | 'cluster';
  from: string;
  to: string;
  ports: string;
  added?: string;
  /** audit: the containers it selects run in audit mode (unless their own mode says otherwise) */
  mode?: 'audit' | 'enforce';
  /** the policy in the document form `policy add -f` reads (what `policy list -o yaml` prints) */
  spec: Record<string, unknown>;
}

// ------------------------------------------------------------------ modes

export type ModeName = 'enforce' | 'audit';

/** Where a container's mode comes from. */
export interface ModeInfo {
  mode: ModeName;
  /** config: the config file (the container's mode, or a policy in audit mode); runtime: `bastion mode` (or a runtime policy in audit mode); default: the host's mode */
  source: 'config' | 'runtime' | 'default';
  /** the policy in audit mode that put it in audit mode (an optional field beyond the console contract) */
  policy?: string;
}

/** GET /v1/modes */
export interface ModesAnswer {
  /** the host's mode (the config file's `mode`): audit puts every container in audit mode */
  global: ModeName;
  containers: Array<{ name: string } & ModeInfo>;
}

/** PUT /v1/containers/:name/mode */
export interface ModeChange {
  name: string;
  mode: ModeName;
}

// --------------------------------------------------------------- learning

/** POST /v1/learn: the body */
export interface LearnRequest {
  select?: Record<string, string>;
  containers?: string[];
  /** a duration back from now or an ISO time (default: the whole history) */
  since?: string;
  mergePorts?: boolean;
}

/** POST /v1/learn: the answer */
export interface LearnAnswer {
  /** the policies, each with its evidence ({ flows, firstSeen, lastSeen }, which the policy parser accepts and ignores) */
  document: { policies: LearnedPolicy[] };
  /** the same document as YAML, evidence in comments: valid for POST /v1/policies and `bastion policy add -f` as it is */
  yaml: string;
  /** flow records learned from */
  flows: number;
  /** records left out, by why (optional beyond the console contract) */
  skipped?: Record<string, number>;
  /** containers with no stable label, and the like (optional beyond the console contract) */
  warnings?: string[];
}

/** POST /v1/verify: the body */
export interface VerifyRequest {
  /** a policies document, YAML or JSON */
  candidate: string;
  since?: string;
  containers?: string[];
  /** only flows with a container of these labels at either end (optional beyond the console contract) */
  select?: Record<string, string>;
}

/** POST /v1/verify: the answer (ok: every flow that went through is allowed by the candidate) */
export interface VerifyAnswer {
  ok: boolean;
  replayed: number;
  wouldDrop: ReplayedFlow[];
  newlyAllowed: ReplayedFlow[];
  /** records not replayed, by why (optional beyond the console contract) */
  skipped?: Record<string, number>;
}

/** GET /v1/status */
export interface StatusReport {
  /** protection is in place: every protected container has its stack, and there is no problem below (the maps dirty after a failed write, a container left to another instance, ...) */
  ok: boolean;
  /**
   * what keeps protection from being what was asked for, one sentence each
   * (saved runtime policies that could not be read, ...): `status` shows
   * them and exits 4
   */
  problems: string[];
  /** the runtime policies (bastion policy add) */
  runtimePolicies: RuntimePoliciesStatus;
  /** why a change of the config file is not applied yet (its writer has not closed it, ...) */
  configPending?: string;
  /** published ports let in (a platform that publishes ports, Docker) */
  published?: PublishedStatus;
  daemon: {
    pid: number;
    pinPath: string;
    configPath?: string;
    mode: string;
    startedAt: string;
    generation: number;
    lastApplyMs?: number;
    flowsSeen: number;
    /** the flow history on disk (absent when the daemon runs without one) */
    flowHistory?: {
      dir: string;
      /** bytes on disk, and the cap */
      bytes: number;
      maxBytes: number;
      files: number;
      /** records written since start, and not written (the disk did not keep up) */
      written: number;
      dropped: number;
      /** segments deleted to stay under the cap, since start */
      rotatedOut: number;
      errors: number;
      /** the oldest record kept (epoch ms) */
      oldestMs?: number;
    };
  };
  endpoints: EndpointStatus[];
  unprotected: Array<{ name: string; key: string; reason: string }>;
  rules: Array<{ id: string; direction: string; subject: string; peers: string; ports: string }>;
  entries: Record<string, number>;
  counters: Record<string, { packets: number; bytes: number; drop: boolean }>;
  /** the conntrack table: entries in use against capacity, and each endpoint's share */
  conntrack?: { entries: number; capacity: number; perEndpointLimit: number; collected: number };
  /** flow events: held back by the rate limit (counted) and lost (ring buffer full) */
  events: { perSecondLimit?: number; suppressed: number; lost: number };
  /** the last posture audit (`bastion audit`), at most a minute or so old; absent until the first one ran */
  audit?: StatusAudit;
  /** cluster mode: the store, the nodes (health, lease age), the tunnel, the remote endpoints in this node's maps */
  cluster?: ClusterStatus;
  /** the update path: dirty after a failed write until a resync repaired it; drift checks and what they repaired */
  reconciler?: ReconcilerStatus;
}

/** A cluster node's view of its cluster (status.cluster in cluster mode). */
export interface ClusterStatus {
  node: string;
  store: string;
  session: {
    node: string;
    connected: boolean;
    watching: boolean;
    lease?: { id: string; ttlS: number; renewedAgoMs?: number };
    pendingWrites: number;
    lastError?: string;
    revision: number;
  };
  /**
   * programAttached: this instance's from_underlay is on the interface (other nodes' small packets are
   * decapsulated there); whyNotAttached: why it is not (a filter in its slot, a failed attach)
   */
  underlay: { interface: string; address: string; programAttached?: boolean; whyNotAttached?: string };
  tunnel: { device: string; ifindex: number; port: number; programAttached: boolean; repairs: number };
  /** every node the store knows; lease figures as of the last look (every few seconds) */
  nodes: Array<{ name: string; underlay: string; self: boolean; endpoints: number; lease?: { ttlS: number; grantedTtlS: number; ageS: number }; healthy: boolean }>;
  remoteEndpoints: { known: number; inMaps: number };
  /** the remote endpoints in this node's maps (peers of local ones) */
  peers: Array<{ id: string; name: string; identity: number; ipv4: string; node: string; nodeIp: string }>;
  refused: Array<{ key: string; reason: string }>;
  invalidRecords: Array<{ key: string; error: string }>;
  policies: number;
  /** what keeps the node from being a sound member: another daemon with its --node, other nodes not reached through the underlay */
  problems: string[];
}

/** The update path's health (`bastion status`, the Reconciler line). */
export interface ReconcilerStatus {
  /** a map write failed (or a repair did) and the maps are not known to be what the daemon wants */
  dirty: boolean;
  dirtySince?: string;
  lastError?: string;
  /** map writes that failed since the daemon started */
  failedWrites: number;
  /** a resync is scheduled or running (with back-off) */
  resyncing: boolean;
  resyncAttempts: number;
  nextResyncAt?: string;
  /** the last read-back of the maps (periodic drift check, resync, `status --verify`) */
  lastCheck?: { at: string; reason: string; ms: number; repaired: number; clean: boolean; error?: string };
  /** differences repaired since start-up, by map (or "stack") and kind (missing, extra, changed, reattached, rediscovered) */
  repairs: Record<string, Record<string, number>>;
  /** containers left unprotected because their interface carries another Bastion instance's stack */
  blocked: number;
  /** the periodic drift check's interval (ms); 0 when it is off */
  checkIntervalMs: number;
}

/** POST /v1/status/verify: every managed map and stack read back and compared now, differences repaired. */
export interface VerifyResult {
  reason: string;
  at: string;
  ms: number;
  /** everything is in place after the check */
  clean: boolean;
  maps: {
    repaired: number;
    clean: boolean;
    error?: string;
    maps: Record<string, { entries: number; state: string; missing: number; extra: number; changed: number }>;
  };
  stacks: {
    checked: number;
    reattached: number;
    foreign: Array<{ endpoint?: string; hostIfindex: number; ownerPinPath?: string }>;
    rediscovered: string[];
    lost: string[];
  };
}

/** What containers publish (docker run -p) and from where Bastion lets it in (bastion run --published-ports). */
export interface PublishedStatus {
  mode: 'allow' | 'host-only' | 'deny';
  ports: Array<{ container: string; fromHost: string; fromOutside: string }>;
}

export interface RuntimePoliciesStatus {
  /** in force */
  count: number;
  /** saved files that could not be read, moved aside (their policies are NOT enforced) until someone removes them */
  unreadable: string[];
  /** why the last save failed, while it has not succeeded since */
  saveError?: string;
}

export interface EndpointStatus {
  name: string;
  key: string;
  identity: number;
  ipv4: string;
  mac: string;
  interface: string;
  hostInterface: string;
  hostIfindex: number;
  /** the Linux bridge behind the host-side veth, when there is one (the console groups containers by it) */
  bridge?: string;
  /** the container's gateway address, when known */
  gateway?: string;
  mode: string;
  /** where the mode comes from: config (the container's own mode, or a policy in audit mode), runtime (bastion mode), default (the host's mode) */
  modeSource?: ModeInfo['source'];
  /** the policy in audit mode that put it in audit mode */
  modePolicy?: string;
  labels: Record<string, string>;
  /** ok: this daemon's programs on both hooks; owner "foreign": another Bastion instance's stack (ownerPinPath names it) */
  stack: { ingress?: number; egress?: number; ok: boolean; owner?: string; ownerPinPath?: string; gone?: boolean };
  counters: { txPackets: number; txBytes: number; rxPackets: number; rxBytes: number; drops: number };
  /** conntrack entries charged to this endpoint (its share: StatusReport.conntrack.perEndpointLimit) */
  conntrack?: number;
  /** the posture audit's findings about this container (when a report exists; GET /v1/audit has them in full) */
  findings?: StatusAudit['containers'][string];
}

/**
 * GET /v1/graph: the dependency graph policy describes (src/policy/graph.ts),
 * what the console draws before any traffic is seen. Edge ends are endpoint
 * names or the ids of `externals`.
 */
export interface GraphReport {
  /** the manager's generation it was computed at (it changes with every applied change) */
  generation: number;
  endpoints: GraphEndpoint[];
  /** ends that are not managed endpoints: "host", "world", and each CIDR peer */
  externals: GraphExternal[];
  edges: GraphEdgeReport[];
  /** every rule in force, as in the status report; endpoints refer to them by index */
  rules: StatusReport['rules'];
  /** the rules select more pairs than the graph holds: edges are missing */
  truncated: boolean;
}

export interface GraphEndpoint {
  name: string;
  key: string;
  /** indexes into `rules`: the rules whose subject selects this endpoint, by direction */
  egress: number[];
  ingress: number[];
}

export interface GraphExternal {
  id: string;
  kind: 'host' | 'world' | 'cidr';
  /** "host", "world", "10.0.0.0/8 except 10.1.0.0/16" */
  label: string;
  /** for kind cidr: the prefix (flow records name an outside address by it) */
  cidr?: string;
}

export interface GraphEdgeReport {
  from: string;
  to: string;
  /** what both sides allow, in the policy syntax: ["8080/tcp", "icmp"], ["any"] */
  ports: string[];
  /** the rules that allow it */
  rules: string[];
}

// ------------------------------------------------------------ flow stream

/**
 * GET /v1/flows?follow=1 streams NDJSON: one FlowRecord per line and, where
 * this client fell behind and records were skipped for it, one line saying
 * how many, at the place of the gap. Flow records have no `type` field.
 */
export interface FlowsLost {
  type: 'lost';
  count: number;
}

export type FlowStreamLine = FlowRecord | FlowsLost;

export function isFlowsLost(line: FlowStreamLine): line is FlowsLost {
  return (line as FlowsLost).type === 'lost';
}
