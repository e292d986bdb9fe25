/** Small display helpers shared by the console's components. */
import type { FlowPeer, FlowRecord } from '../../api/types.js';

export function peerText(p: FlowPeer): string {
  return `${p.name ?? p.ip}${p.port !== undefined ? `:${p.port}` : ''}`;
}

/** The policies a flow names: "egress / ingress", either alone, or "". */
export function flowRules(r: FlowRecord): string {
  return [r.policies?.egress, r.policies?.ingress].filter(Boolean).join(' / ');
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
