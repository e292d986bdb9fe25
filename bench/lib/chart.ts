/**
 * The scale-series chart: an SVG drawn here (no charting library) and turned
 * into a PNG with rsvg-convert (Debian package librsvg2-bin).
 * Panels: new connections/s, update latency (p50 and p99) and Bastion daemon
 * memory, each against the number of containers on a log axis.
 */
import { writeFileSync } from 'node:fs';
import { runSync, which } from './exec.js';
import type { ScalePoint } from './scale.js';

interface Pt {
  x: number;
  y: number;
  lo?: number;
  hi?: number;
}
interface Series {
  name: string;
  color: string;
  dash?: string;
  points: Pt[];
}
interface Panel {
  title: string;
  yLabel: string;
  yLog: boolean;
  series: Series[];
  /** horizontal reference line (a target) */
  ref?: { y: number; label: string };
  empty?: string;
}

const W = 1530;
const H = 520;
const PW = 400;
const PH = 340;
const FONT = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
  }
  return out;
}

function label(v: number): string {
  if (v === 0) return '0';
  if (v >= 1000) return `${(v / 1000).toLocaleString('en-US', { maximumFractionDigits: 1 })}k`;
  if (v >= 1) return v.toLocaleString('en-US', { maximumFractionDigits: 1 });
  return v.toPrecision(2);
}

function panel(p: Panel, ox: number, oy: number, xs: number[]): string {
  const out: string[] = [];
  const xMin = Math.min(...xs) / 1.5;
  const xMax = Math.max(...xs) * 1.5;
  const X = (x: number) => ox + ((Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * PW;
  const ys: number[] = [];
  for (const s of p.series) for (const pt of s.points) ys.push(pt.y, pt.lo ?? pt.y, pt.hi ?? pt.y);
  if (p.ref) ys.push(p.ref.y);
  const finite = ys.filter((y) => Number.isFinite(y) && (!p.yLog || y > 0));
  let yMin: number;
  let yMax: number;
  if (p.yLog) {
    yMin = finite.length ? Math.min(...finite) / 1.2 : 0.1;
    yMax = finite.length ? Math.max(...finite) * 1.2 : 10;
    yMin = 10 ** Math.floor(Math.log10(yMin));
    yMax = 10 ** Math.ceil(Math.log10(yMax));
  } else {
    yMin = 0;
    yMax = finite.length ? Math.max(...finite) * 1.15 : 1;
  }
  const Y = p.yLog
    ? (y: number) => oy + PH - ((Math.log10(y) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * PH
    : (y: number) => oy + PH - ((y - yMin) / (yMax - yMin)) * PH;
  out.push(`<text x="${ox + PW / 2}" y="${oy - 18}" font-size="17" font-weight="bold" text-anchor="middle">${esc(p.title)}</text>`);
  out.push(`<rect x="${ox}" y="${oy}" width="${PW}" height="${PH}" fill="#fafafa" stroke="#888"/>`);
  // grid and y ticks
  const yt = p.yLog ? logTicks(yMin, yMax) : niceTicks(yMin, yMax);
  for (const v of yt) {
    const y = Y(v);
    out.push(`<line x1="${ox}" x2="${ox + PW}" y1="${y}" y2="${y}" stroke="#e2e2e2"/>`);
    out.push(`<text x="${ox - 6}" y="${y + 4}" font-size="12" text-anchor="end">${label(v)}</text>`);
  }
  // x ticks at the measured sizes
  for (const v of xs) {
    const x = X(v);
    out.push(`<line x1="${x}" x2="${x}" y1="${oy}" y2="${oy + PH}" stroke="#e2e2e2"/>`);
    out.push(`<text x="${x}" y="${oy + PH + 18}" font-size="12" text-anchor="middle">${v.toLocaleString('en-US')}</text>`);
  }
  out.push(`<text x="${ox + PW / 2}" y="${oy + PH + 40}" font-size="13" text-anchor="middle">containers (log scale)</text>`);
  out.push(`<text x="${ox - 52}" y="${oy + PH / 2}" font-size="13" text-anchor="middle" transform="rotate(-90 ${ox - 52} ${oy + PH / 2})">${esc(p.yLabel)}</text>`);
  if (p.ref && Number.isFinite(p.ref.y)) {
    const y = Y(p.ref.y);
    out.push(`<line x1="${ox}" x2="${ox + PW}" y1="${y}" y2="${y}" stroke="#c0392b" stroke-dasharray="6 4"/>`);
    out.push(`<text x="${ox + PW - 4}" y="${y - 5}" font-size="12" fill="#c0392b" text-anchor="end">${esc(p.ref.label)}</text>`);
  }
  // series
  let legendY = oy + 16;
  for (const s of p.series) {
    const pts = s.points.filter((pt) => Number.isFinite(pt.y) && (!p.yLog || pt.y > 0));
    if (pts.length) {
      const d = pts.map((pt, i) => `${i ? 'L' : 'M'}${X(pt.x).toFixed(1)},${Y(pt.y).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
      for (const pt of pts) {
        const x = X(pt.x);
        if (pt.lo !== undefined && pt.hi !== undefined && (!p.yLog || pt.lo > 0)) {
          out.push(`<line x1="${x}" x2="${x}" y1="${Y(pt.lo)}" y2="${Y(pt.hi)}" stroke="${s.color}" stroke-width="1.5"/>`);
          out.push(`<line x1="${x - 4}" x2="${x + 4}" y1="${Y(pt.lo)}" y2="${Y(pt.lo)}" stroke="${s.color}"/>`);
          out.push(`<line x1="${x - 4}" x2="${x + 4}" y1="${Y(pt.hi)}" y2="${Y(pt.hi)}" stroke="${s.color}"/>`);
        }
        out.push(`<circle cx="${x}" cy="${Y(pt.y)}" r="4" fill="${s.color}"/>`);
      }
    }
    out.push(`<line x1="${ox + 10}" x2="${ox + 34}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(`<text x="${ox + 40}" y="${legendY}" font-size="13">${esc(s.name)}${pts.length ? '' : ' (not measured)'}</text>`);
    legendY += 18;
  }
  if (p.empty) out.push(`<text x="${ox + PW / 2}" y="${oy + PH / 2}" font-size="15" fill="#777" text-anchor="middle">${esc(p.empty)}</text>`);
  return out.join('\n');
}

const IPT = '#d35400';
const BAS = '#2471a3';

export function renderScaleSvg(scale: ScalePoint[], subtitle: string): string {
  const xs = scale.map((p) => p.containers);
  const pts = (f: (p: ScalePoint) => Pt | null): Pt[] => scale.map(f).filter((x): x is Pt => x !== null);
  const conn: Panel = {
    title: 'New connections per second',
    yLabel: 'connections / s (median, min–max)',
    yLog: false,
    series: [
      { name: 'iptables', color: IPT, points: pts((p) => (p.iptables ? { x: p.containers, y: p.iptables.conn_per_s, lo: p.iptables.conn_per_s_min, hi: p.iptables.conn_per_s_max } : null)) },
      { name: 'bastion', color: BAS, points: pts((p) => (p.bastion ? { x: p.containers, y: p.bastion.conn_per_s, lo: p.bastion.conn_per_s_min, hi: p.bastion.conn_per_s_max } : null)) },
    ],
  };
  const upd: Panel = {
    title: 'Time to enforce one added dependency',
    yLabel: 'milliseconds (log scale)',
    yLog: true,
    ref: { y: 5, label: 'target: 5 ms p99' },
    series: [
      { name: 'iptables p99', color: IPT, points: pts((p) => (p.iptables ? { x: p.containers, y: p.iptables.update_ms_p99 } : null)) },
      { name: 'iptables p50', color: IPT, dash: '5 4', points: pts((p) => (p.iptables ? { x: p.containers, y: p.iptables.update_ms_p50 } : null)) },
      { name: 'bastion p99', color: BAS, points: pts((p) => (p.bastion ? { x: p.containers, y: p.bastion.update_ms_p99 } : null)) },
      { name: 'bastion p50', color: BAS, dash: '5 4', points: pts((p) => (p.bastion ? { x: p.containers, y: p.bastion.update_ms_p50 } : null)) },
    ],
  };
  const memPts = pts((p) => (p.bastion?.rss_mb ? { x: p.containers, y: p.bastion.rss_mb } : null));
  const mem: Panel = {
    title: 'Bastion daemon memory',
    yLabel: 'VmRSS (MB)',
    yLog: false,
    ref: { y: 150, label: 'target: 150 MB' },
    series: [{ name: 'bastion VmRSS', color: BAS, points: memPts }],
    ...(memPts.length ? {} : { empty: 'bastion not measured' }),
  };
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="30" font-size="21" font-weight="bold" text-anchor="middle">Bastion benchmark: scale series</text>`,
    `<text x="${W / 2}" y="52" font-size="13" fill="#555" text-anchor="middle">${esc(subtitle)}</text>`,
    panel(conn, 95, 110, xs),
    panel(upd, 95 + 510, 110, xs),
    panel(mem, 95 + 1020, 110, xs),
    '</svg>',
  ];
  return parts.join('\n');
}

/** write svgPath and, when rsvg-convert exists, pngPath; returns the PNG path or null */
export function writeChart(svg: string, svgPath: string, pngPath: string): string | null {
  writeFileSync(svgPath, svg);
  if (!which('rsvg-convert')) return null;
  runSync(['rsvg-convert', '-f', 'png', '-o', pngPath, svgPath]);
  return pngPath;
}
