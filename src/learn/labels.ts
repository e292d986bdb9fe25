/**
 * Which labels name a workload, and which only name one instance of it.
 *
 * A learned policy must still hold when a container is recreated, scaled or
 * upgraded, so it may select workloads only by labels that survive those:
 * the Compose service (with its project), user labels (`app: web`), and the
 * container name when it is not itself a replica's or a generated one. It
 * must never select by a container id, a replica number, a hash, a version
 * or a timestamp: a policy that names them stops matching at the next
 * deploy (and, worse, Docker reuses nothing of them, so it silently selects
 * nothing). Pure.
 */
import { BUILTIN_LABELS } from '../policy/model.js';
import { COMPOSE_PROJECT_LABEL } from '../policy/compose.js';

/**
 * Label keys that change from one instance, build or deploy to the next
 * (exact keys), or that describe the image or the engine rather than the
 * workload's role.
 */
const VOLATILE_KEYS = new Set([
  'com.docker.compose.container-number',
  'com.docker.compose.config-hash',
  'com.docker.compose.version',
  'com.docker.compose.oneoff',
  'com.docker.compose.replace',
  'com.docker.compose.image',
  'com.docker.compose.depends_on',
  'com.docker.compose.project.config_files',
  'com.docker.compose.project.working_dir',
  'com.docker.compose.project.environment_file',
  'com.docker.compose.service', // stable, but Bastion carries it as bastion.io/compose-service
  'pod-template-hash',
  'controller-revision-hash',
  'pod-template-generation',
  'statefulset.kubernetes.io/pod-name',
  'apps.kubernetes.io/pod-index',
  'batch.kubernetes.io/controller-uid',
  'batch.kubernetes.io/job-name',
  'controller-uid',
  'job-name',
  'bastion.io/network',
]);

/** Key words that mark a volatile label wherever they appear in the key. */
const VOLATILE_KEY_WORDS = /(^|[./_-])(hash|revision|version|generation|commit|sha|digest|build|created|timestamp|date|uid|uuid|container-number|replica|instance-id|pod-name|pod-index)($|[./_-])/i;

/** Key prefixes of labels that describe the image, not the workload. */
const IMAGE_KEY_PREFIXES = ['org.opencontainers.image.', 'org.label-schema.', 'io.buildah.', 'maintainer', 'desktop.docker.io/'];

/** Values that look like identifiers of one instance: ids, hashes, uuids, timestamps. */
export function isVolatileValue(v: string): boolean {
  if (/^[0-9a-f]{12}$|^[0-9a-f]{64}$/i.test(v)) return true; // a container id, short or long
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v)) return true; // a uuid
  if (/^(sha\d+:)?[0-9a-f]{7,}$/i.test(v) && /\d/.test(v) && /[a-f]/i.test(v)) return true; // a hash or digest
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?/.test(v)) return true; // a date or timestamp
  if (/^\d{9,}$/.test(v)) return true; // an epoch time or a long serial
  return false;
}

/** Is this label about one instance (or one build), rather than the workload? */
export function isVolatileLabel(key: string, value: string): boolean {
  if (VOLATILE_KEYS.has(key)) return true;
  if (IMAGE_KEY_PREFIXES.some((p) => key.startsWith(p))) return true;
  if (key === BUILTIN_LABELS.name) return isVolatileName(value);
  if (key.startsWith('bastion.io/')) return false;
  if (VOLATILE_KEY_WORDS.test(key)) return true;
  return isVolatileValue(value);
}

/**
 * A container name that names an instance: a Compose replica
 * ("shop-web-1", "shop_web_1"), a Kubernetes pod of a ReplicaSet
 * ("web-7d4b9c8f6d-x2kqp") or StatefulSet ("db-0"), a generated Docker name
 * ("eager_turing"), or an id.
 */
export function isVolatileName(name: string): boolean {
  if (isVolatileValue(name)) return true;
  if (/[-_]\d+$/.test(name)) return true; // replica number
  if (/-[0-9a-z]{8,10}-[0-9a-z]{5}$/.test(name)) return true; // ReplicaSet pod
  if (/-[0-9a-z]{5}$/.test(name) && /\d/.test(name.slice(-5))) return true; // DaemonSet / Job pod suffix
  if (/^[a-z]+_[a-z]+$/.test(name)) return true; // Docker's generated adjective_surname
  return false;
}

/** The labels of a workload that are stable (not volatile). */
export function stableLabels(labels: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) if (!isVolatileLabel(k, v)) out[k] = v;
  return out;
}

export interface WorkloadSelector {
  /** matchLabels of the selector */
  labels: Record<string, string>;
  /** a short name for the workload (for policy names): the service, app, or container name */
  short: string;
  /** how it was chosen: compose (service and project), labels (the user's), name (bastion.io/name), instance (no stable label: the instance's name) */
  basis: 'compose' | 'labels' | 'name' | 'instance';
}

/** Label keys that name the workload's role, in the order their value is preferred as its short name. */
const ROLE_KEYS = ['app.kubernetes.io/name', 'app', 'k8s-app', 'name', 'service', 'component', 'role', 'tier'];

/**
 * How a learned policy selects this workload:
 * 1. a Compose service: bastion.io/compose-service (and the project), as
 *    `bastion compose` writes it, so every replica is one workload;
 * 2. otherwise the user's stable labels, all of them (the narrowest
 *    selector that still survives a recreation);
 * 3. otherwise the container name (bastion.io/name), when it is not an
 *    instance's name;
 * 4. otherwise the name all the same, marked `instance` so that the
 *    learner can warn: there is nothing stable to select it by.
 */
export function workloadSelector(labels: Readonly<Record<string, string>>, name?: string): WorkloadSelector {
  const service = labels[BUILTIN_LABELS.composeService];
  if (service !== undefined) {
    const project = labels[COMPOSE_PROJECT_LABEL];
    return { labels: { [BUILTIN_LABELS.composeService]: service, ...(project !== undefined ? { [COMPOSE_PROJECT_LABEL]: project } : {}) }, short: service, basis: 'compose' };
  }
  const user = stableLabels(
    Object.fromEntries(
      Object.entries(labels)
        .filter(([k]) => !k.startsWith('bastion.io/') && !k.startsWith('com.docker.'))
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    ),
  );
  if (Object.keys(user).length > 0) {
    const role = ROLE_KEYS.find((k) => user[k] !== undefined);
    const short = role ? user[role]! : Object.entries(user).sort(([a], [b]) => a.localeCompare(b)).map(([, v]) => v)[0]!;
    return { labels: user, short, basis: 'labels' };
  }
  const n = labels[BUILTIN_LABELS.name] ?? name;
  if (n !== undefined) return { labels: { [BUILTIN_LABELS.name]: n }, short: n, basis: isVolatileName(n) ? 'instance' : 'name' };
  return { labels: {}, short: 'unknown', basis: 'instance' };
}

/** A selector's canonical text (equal selectors, equal texts). */
export function selectorKey(labels: Readonly<Record<string, string>>): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(',');
}
