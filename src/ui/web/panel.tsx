/**
 * The side panel: one container in full (identity, labels, addresses, stack,
 * mode, its rules both ways, its dependencies and whether they were used,
 * who dropped on it, its recent flows, its posture findings), or, with no
 * container selected, the overview (counts, unprotected containers and why,
 * the posture, the containers under attack).
 */
import { useEffect, useState } from 'preact/hooks';
import type { EndpointStatus, FlowRecord, GraphReport, StatusReport } from '../../api/types.js';
import { endpointNodeId, trafficEdgeId, type TrafficAggregate } from '../model/traffic.js';
import { networkOf } from '../model/map-model.js';
import { getJson } from './api.js';
import { bytes, count, flowRules, peerText, plural, timeText } from './format.js';

export interface ModeInfo {
  mode: string;
  source?: string;
}

interface ContainerPanelProps {
  endpoint: EndpointStatus;
  status: StatusReport;
  graph?: GraphReport;
  traffic: TrafficAggregate;
  /** bumps when traffic changed, so the panel re-reads it */
  trafficSeq: number;
  mode?: ModeInfo;
  picked: boolean;
  focused: boolean;
  onFocus(): void;
  onUnfocus(): void;
  onPick(): void;
  onSetMode(mode: 'audit' | 'enforce'): void;
  onFlows(): void;
  onSelect(name: string): void;
  modeBusy?: string;
}

const SEVERITY_ORDER = ['critical', 'high', 'medium', 'low', 'info'];

export function ContainerPanel(p: ContainerPanelProps) {
  const e = p.endpoint;
  const [recent, setRecent] = useState<FlowRecord[] | undefined>();
  const [recentError, setRecentError] = useState<string | undefined>();
  useEffect(() => {
    const ctl = new AbortController();
    setRecent(undefined);
    getJson<FlowRecord[] | { flows: FlowRecord[] }>(`/v1/flows?container=${encodeURIComponent(e.name)}&last=30&limit=30`, ctl.signal)
      .then((r) => setRecent((Array.isArray(r) ? r : r.flows).slice().reverse()))
      .catch((err: Error) => !ctl.signal.aborted && setRecentError(err.message));
    return () => ctl.abort();
  }, [e.name, p.trafficSeq >> 4]);

  const g = p.graph?.endpoints.find((x) => x.name === e.name);
  const rules = p.graph?.rules ?? [];
  const me = endpointNodeId(e.name);
  const out = p.graph?.edges.filter((x) => x.from === e.name) ?? [];
  const inn = p.graph?.edges.filter((x) => x.to === e.name) ?? [];
  const used = (from: string, to: string) => p.traffic.edges.get(trafficEdgeId('allowed', from, to))?.count ?? 0;
  const ref = (end: string) => (p.graph?.externals.some((x) => x.id === end) ? `x:${end}` : endpointNodeId(end));
  const label = (end: string) => p.graph?.externals.find((x) => x.id === end)?.label ?? end;
  const dropsIn = [...p.traffic.edges.values()].filter((t) => t.kind === 'dropped' && t.to === me).sort((a, b) => b.count - a.count);
  const dropsOut = [...p.traffic.edges.values()].filter((t) => t.kind === 'dropped' && t.from === me).sort((a, b) => b.count - a.count);
  const unattributed = p.traffic.nodes.get(me)?.unattributedIn ?? 0;
  const audits = [...p.traffic.edges.values()].filter((t) => t.kind === 'audit' && (t.from === me || t.to === me));
  const mode = p.mode?.mode ?? e.mode;
  const findings = [...(e.findings ?? [])].sort((a, b) => SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity));
  const nodeName = (id: string) => (id.startsWith('e:') ? id.slice(2) : id.startsWith('x:cidr:') ? id.slice(7) : id.slice(2));

  return (
    <div class="panel container" data-testid="container-panel" data-name={e.name}>
      <h2>
        {e.name}
        <span class={`badge mode-${mode}`} data-testid="mode">
          {mode}
        </span>
        <span class={`badge ${e.stack.ok ? 'ok' : 'bad'}`}>{e.stack.ok ? 'stack in place' : 'STACK MISSING'}</span>
      </h2>
      <div class="actions">
        {p.focused ? <button onClick={p.onUnfocus}>Show all</button> : <button onClick={p.onFocus}>Focus</button>}
        <button onClick={p.onPick} class={p.picked ? 'on' : ''} name="pick">
          {p.picked ? 'Picked for learning' : 'Pick for learning'}
        </button>
        <button name="mode" disabled={!!p.modeBusy} onClick={() => p.onSetMode(mode === 'audit' ? 'enforce' : 'audit')}>
          {p.modeBusy ?? (mode === 'audit' ? 'Switch to enforce' : 'Switch to audit')}
        </button>
        <button onClick={p.onFlows}>Its flows ↓</button>
      </div>
      {p.mode?.source && <p class="muted small">mode set by {p.mode.source}</p>}
      <dl>
        <dt>identity</dt>
        <dd>
          {e.identity} <span class="muted">· key {e.key}</span>
        </dd>
        <dt>labels</dt>
        <dd>
          {Object.entries(e.labels).map(([k, v]) => (
            <span class="chip" key={k}>
              {k}={v}
            </span>
          ))}
        </dd>
        <dt>addresses</dt>
        <dd>
          {e.ipv4} · {e.mac}
          <br />
          <span class="muted">
            {e.interface} ↔ {e.hostInterface} (ifindex {e.hostIfindex}) · network {networkOf(e)}
            {e.gateway ? ` · gateway ${e.gateway}` : ''}
          </span>
        </dd>
        <dt>stack</dt>
        <dd>
          {e.stack.ok ? 'ingress and egress programs attached' : 'missing: this container is NOT protected'}
          <span class="muted">
            {' '}
            (prog {e.stack.ingress ?? '–'}/{e.stack.egress ?? '–'})
          </span>
        </dd>
        <dt>traffic</dt>
        <dd>
          sent {count(e.counters.txPackets)} pkts ({bytes(e.counters.txBytes)}) · received {count(e.counters.rxPackets)} pkts ({bytes(e.counters.rxBytes)}) ·{' '}
          <b class={e.counters.drops ? 'bad' : ''}>{count(e.counters.drops)} dropped</b>
          {unattributed > 0 && (
            <span class="muted">
              {' '}
              · the map saw {count(unattributed)} dropped frames with no IPv4 sender (IPv6, other ethertypes)
            </span>
          )}
        </dd>
      </dl>

      {(dropsIn.length > 0 || dropsOut.length > 0 || audits.length > 0) && (
        <>
          <h3>Drops</h3>
          <ul class="list">
            {dropsIn.map((t) => (
              <li key={`in${t.from}`} class="bad">
                ✕ from <a onClick={() => p.onSelect(nodeName(t.from))}>{nodeName(t.from)}</a> on {[...t.ports].join(', ')} ×{t.count}{' '}
                <span class="muted">({[...t.reasons].join(', ')})</span>
              </li>
            ))}
            {dropsOut.map((t) => (
              <li key={`out${t.to}`} class="warn">
                ✕ sent to <a onClick={() => p.onSelect(nodeName(t.to))}>{nodeName(t.to)}</a> on {[...t.ports].join(', ')} ×{t.count}{' '}
                <span class="muted">({[...t.reasons].join(', ')})</span>
              </li>
            ))}
            {audits.map((t) => (
              <li key={`au${t.from}${t.to}`} class="audit">
                audit: {nodeName(t.from)} → {nodeName(t.to)} on {[...t.ports].join(', ')} ×{t.count} <span class="muted">(enforce would drop)</span>
              </li>
            ))}
          </ul>
        </>
      )}

      <h3>Dependencies</h3>
      {!out.length && !inn.length && <p class="muted">policy allows it nothing: it may neither open nor accept connections</p>}
      <ul class="list">
        {out.map((x) => {
          const n = used(me, ref(x.to));
          return (
            <li key={`o${x.to}`}>
              → <a onClick={() => p.onSelect(x.to)}>{label(x.to)}</a> {x.ports.join(' ')} <span class="muted">({x.rules.join(', ')})</span>{' '}
              {n ? <span class="ok">used ×{n}</span> : <span class="muted">never used</span>}
            </li>
          );
        })}
        {inn.map((x) => {
          const n = used(ref(x.from), me);
          return (
            <li key={`i${x.from}`}>
              ← <a onClick={() => p.onSelect(x.from)}>{label(x.from)}</a> {x.ports.join(' ')} <span class="muted">({x.rules.join(', ')})</span>{' '}
              {n ? <span class="ok">used ×{n}</span> : <span class="muted">never used</span>}
            </li>
          );
        })}
      </ul>

      <h3>Rules</h3>
      <table class="rules">
        <tbody>
          {(['egress', 'ingress'] as const).flatMap((dir) =>
            (g?.[dir] ?? []).map((i) => {
              const r = rules[i];
              if (!r) return null;
              return (
                <tr key={`${dir}${i}`}>
                  <td class="muted">{dir === 'egress' ? 'out' : 'in'}</td>
                  <td>{r.id}</td>
                  <td>
                    {dir === 'egress' ? 'to' : 'from'} {r.peers}
                  </td>
                  <td>{r.ports}</td>
                </tr>
              );
            }),
          )}
          {!g?.egress.length && !g?.ingress.length && (
            <tr>
              <td class="muted">no rule selects it</td>
            </tr>
          )}
        </tbody>
      </table>

      {findings.length > 0 && (
        <>
          <h3>Posture findings</h3>
          <ul class="list">
            {findings.map((f) => (
              <li key={f.id}>
                <span class={`sev sev-${f.severity}`}>{f.severity}</span> {f.title} <span class="muted">({f.id})</span>
              </li>
            ))}
          </ul>
        </>
      )}

      <h3>Recent flows</h3>
      {recentError && <div class="error">{recentError}</div>}
      <table class="mini">
        <tbody>
          {(recent ?? []).map((r, i) => (
            <tr key={i} class={`v-${r.verdict}`}>
              <td class="muted">{timeText(r.time)}</td>
              <td>
                {peerText(r.src)} → {peerText(r.dst)}
              </td>
              <td>{r.protocol}</td>
              <td class="verdict">{r.verdict}</td>
              <td class="muted">{r.verdict === 'DROPPED' ? r.reason : flowRules(r)}</td>
            </tr>
          ))}
          {recent && !recent.length && (
            <tr>
              <td class="muted">none in the daemon's recent flows</td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}

interface OverviewProps {
  status: StatusReport;
  graph?: GraphReport;
  traffic: TrafficAggregate;
  trafficSeq: number;
  onSelect(name: string): void;
}

export function Overview({ status, graph, traffic, onSelect }: OverviewProps) {
  const eps = status.endpoints;
  const missing = eps.filter((e) => !e.stack.ok);
  const audit = eps.filter((e) => e.mode === 'audit');
  const attacked = [...traffic.nodes.entries()].filter(([id, n]) => id.startsWith('e:') && n.dropsIn > 0).sort((a, b) => b[1].dropsIn - a[1].dropsIn);
  const drops = [...traffic.edges.values()].filter((t) => t.kind === 'dropped').sort((a, b) => b.count - a.count);
  const a = status.audit;
  return (
    <div class="panel overview" data-testid="overview">
      <h2>Overview</h2>
      <dl>
        <dt>containers</dt>
        <dd>
          {eps.length} protected · {status.unprotected.length} unprotected
        </dd>
        <dt>stacks</dt>
        <dd class={missing.length ? 'bad' : 'ok'}>{missing.length ? `${missing.length} MISSING: ${missing.map((m) => m.name).join(', ')}` : 'all in place'}</dd>
        <dt>mode</dt>
        <dd>
          daemon {status.daemon.mode} · {plural(audit.length, 'container')} in audit
        </dd>
        <dt>policy</dt>
        <dd>
          {plural(status.rules.length, 'rule')} · {plural(graph?.edges.length ?? 0, 'dependency', 'dependencies')}
          {graph?.truncated && <b class="bad"> (graph truncated: rules select too many pairs)</b>}
        </dd>
        <dt>flows</dt>
        <dd>
          {count(status.daemon.flowsSeen)} seen by the daemon · {count(traffic.flows)} on this map
          {status.events && (status.events.suppressed > 0 || status.events.lost > 0) && (
            <div class="warn small">
              flow events not recorded: {count(status.events.suppressed)} held back by the rate limit
              {status.events.perSecondLimit ? ` (${status.events.perSecondLimit}/s)` : ''}, {count(status.events.lost)} lost (ring buffer full): the map shows fewer
            </div>
          )}
        </dd>
        {a && (
          <>
            <dt>posture</dt>
            <dd>
              <span class={a.summary.critical + a.summary.high ? 'bad' : 'ok'}>
                {a.summary.critical} critical, {a.summary.high} high
              </span>
              , {a.summary.medium} medium, {a.summary.low} low <span class="muted">(as of {timeText(a.generatedAt)})</span>
            </dd>
          </>
        )}
      </dl>

      <h3>Unprotected containers</h3>
      {status.unprotected.length ? (
        <ul class="list" data-testid="unprotected">
          {status.unprotected.map((u) => (
            <li key={u.key}>
              <b>{u.name}</b> <span class="warn">{u.reason}</span>
            </li>
          ))}
        </ul>
      ) : (
        <p class="muted">none: every container the platform reports is protected</p>
      )}

      <h3>Under attack</h3>
      {attacked.length ? (
        <ul class="list">
          {attacked.slice(0, 15).map(([id, n]) => (
            <li key={id} class="bad">
              <a onClick={() => onSelect(id.slice(2))}>{id.slice(2)}</a>: {count(n.dropsIn)} dropped, from{' '}
              {drops
                .filter((d) => d.to === id)
                .slice(0, 4)
                .map((d) => d.from.replace(/^[ex]:/, ''))
                .join(', ')}
            </li>
          ))}
        </ul>
      ) : (
        <p class="muted">no drops on this map yet</p>
      )}

      {a && a.other.length > 0 && (
        <>
          <h3>Other findings</h3>
          <ul class="list">
            {a.other.slice(0, 12).map((f, i) => (
              <li key={i}>
                <span class={`sev sev-${f.severity}`}>{f.severity}</span> {f.title}
              </li>
            ))}
          </ul>
        </>
      )}
      <p class="muted small">Click a container for its details; shift-click to pick containers for learning.</p>
    </div>
  );
}
