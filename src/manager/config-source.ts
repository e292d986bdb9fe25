/**
 * The config file as the daemon uses it: validated whole (any error rejects
 * all of it), turned into the policy set and the containers to protect.
 */
import type { EndpointSpec, NetnsRef } from './endpoint.js';
import type { Mode, PolicySet } from '../policy/model.js';
import { BUILTIN_LABELS } from '../policy/model.js';
import { configToPolicySet, formatConfigError, parseConfigText, type PolicyConfig } from '../policy/bastion-config.js';
import { boundErrors } from '../policy/errors.js';
import { InputFileError, readInputFile } from '../policy/input-file.js';

/** Largest config file accepted unless `bastion run --max-config-size` says otherwise. */
export const DEFAULT_MAX_CONFIG_BYTES = 16 * 1024 * 1024;

export type LoadedConfig = {
  ok: true;
  policy: PolicySet;
  containers: EndpointSpec[];
  /** the file's policies as written (for listing) */
  policies: PolicyConfig[];
  defaultEndpointMode?: Mode;
};

export type ConfigLoad = LoadedConfig | { ok: false; errors: string[] };

export function netnsRef(netns: string): NetnsRef {
  return netns.includes('/') ? { kind: 'path', path: netns } : { kind: 'name', name: netns };
}

/**
 * Reads and validates the config file. A file that does not validate, or
 * is refused (not a regular file of root or the invoking user, over the
 * size limit), is `ok: false` with the errors (at most a short excerpt of
 * the file in each). A file that cannot be read at all (missing, no
 * permission) throws its InputFileError: that is not a rejected config.
 */
export async function loadConfigSource(path: string | undefined, opts: { containersRequired: boolean; maxBytes?: number }): Promise<ConfigLoad> {
  if (!path) return { ok: true, policy: { mode: 'enforce', rules: [] }, containers: [], policies: [] };
  let text: string;
  try {
    text = readInputFile(path, { maxBytes: opts.maxBytes ?? DEFAULT_MAX_CONFIG_BYTES, limitHint: 'bastion run --max-config-size' });
  } catch (err) {
    if (err instanceof InputFileError && err.invalidInput) return { ok: false, errors: [err.message] };
    throw err;
  }
  const parsed = parseConfigText(text, path, { containersRequired: opts.containersRequired });
  if (!parsed.ok) return { ok: false, errors: boundErrors(parsed.errors.map(formatConfigError)) };
  const config = parsed.config;
  const containers: EndpointSpec[] = (config.containers ?? []).map((c) => ({
    key: `file:${c.name}`,
    name: c.name,
    netns: netnsRef(c.netns),
    interface: c.interface ?? 'eth0',
    labels: { ...(c.labels ?? {}), [BUILTIN_LABELS.name]: c.name },
    ...(c.mode ? { mode: c.mode } : {}),
  }));
  return { ok: true, policy: configToPolicySet(config), containers, policies: config.policies };
}
