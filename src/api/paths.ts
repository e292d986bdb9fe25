/**
 * Where a daemon listens. One daemon per pin path: the socket's name is
 * derived from the pin directory's name, so `--pin-path` alone is enough for
 * `status`, `down` and `flows` to find the daemon that owns it.
 */
import { basename } from 'node:path';

export const RUN_DIR = process.env.BASTION_RUN_DIR ?? '/run/bastion';

export function socketPathFor(pinPath: string): string {
  return `${RUN_DIR}/${basename(pinPath.replace(/\/+$/, '')) || 'bastion'}.sock`;
}

export function pidFileFor(pinPath: string): string {
  return `${RUN_DIR}/${basename(pinPath.replace(/\/+$/, '')) || 'bastion'}.pid`;
}

/** Policies added through the API (`bastion policy add`), kept across daemon restarts until `bastion down`. */
export function policiesFileFor(pinPath: string): string {
  return `${RUN_DIR}/${basename(pinPath.replace(/\/+$/, '')) || 'bastion'}.policies.json`;
}

/** Modes set at run time (`bastion mode audit NAME`), kept across daemon restarts until `bastion down`. */
export function modesFileFor(pinPath: string): string {
  return `${RUN_DIR}/${basename(pinPath.replace(/\/+$/, '')) || 'bastion'}.modes.json`;
}

/** Where a daemon keeps what outlives it: the flow history. */
export const STATE_DIR = process.env.BASTION_STATE_DIR ?? '/var/lib/bastion';

/** The flow history of the daemon of this pin path (kept by `bastion down`: it is the record of what happened). */
export function flowHistoryDirFor(pinPath: string): string {
  return `${STATE_DIR}/${basename(pinPath.replace(/\/+$/, '')) || 'bastion'}/flows`;
}

/** The instance lock of a pin path (flock, held by the daemon for its life). Never removed. */
export function lockFileFor(pinPath: string): string {
  return `${RUN_DIR}/${basename(pinPath.replace(/\/+$/, '')) || 'bastion'}.lock`;
}

/** Written by `bastion down` before it stops a cluster node's daemon: leave the cluster now (revoke the lease). */
export function leaveFileFor(pinPath: string): string {
  return `${RUN_DIR}/${basename(pinPath.replace(/\/+$/, '')) || 'bastion'}.leave`;
}
