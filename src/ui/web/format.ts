/** Small display helpers shared by the console's components. */
import type { FlowPeer, FlowRecord } from '../../api/types.js';

export function peerText(p: FlowPeer): string {
  return `${p.name ?? p.ip}${p.port !== undefined ? `:${p.port}` : ''}`;
}

/** The rule(s) a flow names: `rule` today, `policies.egress/ingress` in the learning work's records. */
export function flowRules(r: FlowRecord): string {
  const p = (r as { policies?: { egress?: string; ingress?: string } }).policies;
  if (p && (p.egress || p.ingress)) return [p.egress, p.ingress].filter(Boolean).join(' / ');
  return (r as { rule?: string }).rule ?? '';
}

export function timeText(iso: string): string {
  return iso.length >= 23 ? iso.slice(11, 23) : iso;
}

export function count(n: number): string {
  if (n < 10_000) return String(n);
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 100_000 ? 1 : 0)}k`;
  return `${(n / 1_000_000).toFixed(1)}M`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

export const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
