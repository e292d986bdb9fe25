/**
 * The config file as the daemon uses it: validated whole (any error rejects
 * all of it), turned into the policy set and the containers to protect.
 */
import { readFile } from 'node:fs/promises';
import type { EndpointSpec, NetnsRef } from '../manager/endpoint.js';
import type { Mode, PolicySet } from '../policy/model.js';
import { BUILTIN_LABELS } from '../policy/model.js';
import { configToPolicySet, formatConfigError, parseConfigText, type PolicyConfig } from '../policy/bastion-config.js';

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

export async function loadConfigSource(path: string | undefined, opts: { containersRequired: boolean }): Promise<ConfigLoad> {
  if (!path) return { ok: true, policy: { mode: 'enforce', rules: [] }, containers: [], policies: [] };
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    return { ok: false, errors: [`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`] };
  }
  const parsed = parseConfigText(text, path, { containersRequired: opts.containersRequired });
  if (!parsed.ok) return { ok: false, errors: parsed.errors.map(formatConfigError) };
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
