/**
 * The Bastion console (served by `bastion ui`): the network map, the side
 * panel (a container, or the overview), the learn → verify → enforce
 * workflow, and the live flow table. It reads and changes the daemon only
 * through its API (/v1/*, forwarded by `bastion ui`).
 *
 * Data: /v1/status (polled), /v1/graph (when the daemon's generation moves),
 * /v1/modes (when the daemon has it), and one NDJSON stream of every flow
 * for the map (/v1/flows?follow=1), folded per edge (src/ui/model/traffic.ts).
 */
import { render } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { FlowRecord, FlowStreamLine, GraphReport, StatusReport } from '../../api/types.js';
import { TrafficAggregate } from '../model/traffic.js';
import { buildMap, cidrIdsOf, networkOf, searchEndpoints } from '../model/map-model.js';
import type { FlowFilters } from '../model/flow-query.js';
import { ApiError, getJson, send, streamLines } from './api.js';
import { MapView } from './map-view.js';
import { ContainerPanel, Overview, type ModeInfo } from './panel.js';
import { FlowTable } from './flow-table.js';
import { Workflow } from './workflow.js';
import { count, plural } from './format.js';

/** What the tests (and a curious operator, from the devtools) can read. */
interface ConsoleHandle {
  view?: MapView;
  traffic: TrafficAggregate;
  timings: { firstRenderMs?: number; lastFocusMs?: number; lastSyncMs?: number; firstDataMs?: number; buildMs?: number };
  focus(name: string): Promise<number>;
}
declare global {
  interface Window {
    __bastion: ConsoleHandle;
  }
}

const MAP_HISTORY = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ModesAnswer {
  global: string;
  containers: Array<{ name: string; mode: string; source: string }>;
}

function Legend() {
  return (
    <div class="legend">
      <span>
        <i class="sw policy-used" /> allowed, used
      </span>
      <span>
        <i class="sw policy-unused" /> allowed, never used
      </span>
      <span>
        <i class="sw dropped" /> dropped
      </span>
      <span>
        <i class="sw audit" /> audit (enforce would drop)
      </span>
      <span>
        <i class="nd attacked" /> attacked
      </span>
      <span>
        <i class="nd attacker" /> attacker
      </span>
      <span>
        <i class="nd audit-mode" /> audit mode
      </span>
    </div>
  );
}

function App() {
  const [status, setStatus] = useState<StatusReport | undefined>();
  const [graph, setGraph] = useState<GraphReport | undefined>();
  const [modes, setModes] = useState<Map<string, ModeInfo> | undefined>();
  const [down, setDown] = useState<string | undefined>();
  const [selected, setSelected] = useState<string | undefined>();
  const [picked, setPicked] = useState<string[]>([]);
  const [tab, setTab] = useState<'details' | 'learn'>('details');
  const [focused, setFocused] = useState<string | undefined>();
  const [search, setSearch] = useState('');
  const [searchOpen, setSearchOpen] = useState(false);
  const [trafficSeq, setTrafficSeq] = useState(0);
  const [lost, setLost] = useState(0);
  const [mapReady, setMapReady] = useState(false);
  const [flowPreset, setFlowPreset] = useState<(FlowFilters & { seq: number }) | undefined>();
  const [modeBusy, setModeBusy] = useState<string | undefined>();
  const [notice, setNotice] = useState<string | undefined>();
  const mapEl = useRef<HTMLDivElement>(null);
  const view = useRef<MapView | undefined>(undefined);
  const traffic = useRef(new TrafficAggregate()).current;
  const latest = useRef<{ status?: StatusReport; graph?: GraphReport; graphMissing?: boolean; modesMissing?: boolean }>({});
  const sync = useRef({ running: false, again: false });
  const handle = useRef<ConsoleHandle>({ traffic, timings: {}, focus: async () => NaN }).current;
  window.__bastion = handle;

  /** Rebuild the map's elements and hand them to the view; coalesces bursts (a flood of flows is one redraw every 150 ms, or more on a big map). */
  const scheduleSync = () => {
    const s = sync.current;
    if (s.running) {
      s.again = true;
      return;
    }
    s.running = true;
    setTimeout(async () => {
      try {
        do {
          s.again = false;
          const { status: st, graph: g, graphMissing } = latest.current;
          if (!st || !view.current || (!g && !graphMissing)) break;
          const t0 = performance.now();
          handle.timings.firstDataMs ??= t0;
          traffic.setNames(new Set(st.endpoints.map((e) => e.name)), cidrIdsOf(g));
          const elements = buildMap({ status: st, graph: g, traffic });
          handle.timings.buildMs = performance.now() - t0;
          await view.current.sync(elements);
          handle.timings.lastSyncMs = performance.now() - t0;
          if (handle.timings.firstRenderMs === undefined) {
            handle.timings.firstRenderMs = performance.now();
            mapEl.current!.dataset.ready = '1';
            setMapReady(true);
          }
          setTrafficSeq((n) => n + 1);
          // the map gets at most 40% of the main thread: a redraw of a thousand containers takes
          // 100-800 ms on a busy machine, and clicks, the panel and the flow table must stay quick
          await sleep(Math.max(150, 1.5 * (performance.now() - t0)));
        } while (s.again);
      } finally {
        s.running = false;
      }
    }, 0);
  };

  const loadGraph = async () => {
    try {
      const g = await getJson<GraphReport>('/v1/graph');
      latest.current.graph = g;
      setGraph(g);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'no-route') latest.current.graphMissing = true;
      else throw e;
    }
  };

  const loadModes = async () => {
    if (latest.current.modesMissing) return;
    try {
      const m = await getJson<ModesAnswer>('/v1/modes');
      setModes(new Map(m.containers.map((c) => [c.name, { mode: c.mode, source: c.source }])));
    } catch (e) {
      if (e instanceof ApiError && e.code === 'no-route') latest.current.modesMissing = true;
    }
  };

  const refresh = async () => {
    const s = await getJson<StatusReport>('/v1/status');
    const prev = latest.current.status;
    latest.current.status = s;
    setStatus(s);
    setDown(undefined);
    const g = latest.current.graph;
    if (!latest.current.graphMissing && (!g || g.generation !== s.daemon.generation || g.endpoints.length !== s.endpoints.length)) await loadGraph();
    await loadModes();
    if (!prev || prev !== s) scheduleSync();
    return s;
  };

  // the map view, once
  useEffect(() => {
    const v = new MapView(mapEl.current!, {
      onSelect: (name) => {
        setSelected(name);
        if (name) setTab('details');
      },
      onPick: (name) => setPicked((p) => (p.includes(name) ? p.filter((x) => x !== name) : [...p, name])),
    });
    view.current = v;
    handle.view = v;
    handle.focus = async (name) => {
      const t0 = performance.now();
      const ok = await v.focus(name);
      const ms = performance.now() - t0;
      if (ok) {
        handle.timings.lastFocusMs = ms;
        setFocused(name);
        setSelected(name);
        setTab('details');
      }
      return ok ? ms : NaN;
    };
    scheduleSync();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape' && v.focused) void v.unfocus().then(() => setFocused(undefined));
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);

  // status (and graph, modes) polling
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout>;
    const tick = async () => {
      let n = 0;
      try {
        n = (await refresh()).endpoints.length;
      } catch (e) {
        setDown(e instanceof ApiError ? e.errors.join('\n') : `the console cannot reach its server: ${(e as Error).message}`);
      }
      if (!stop) timer = setTimeout(tick, n > 300 ? 5000 : 2000);
    };
    void tick();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, []);

  // every flow, for the map
  useEffect(() => {
    const ctl = new AbortController();
    void (async () => {
      while (!ctl.signal.aborted) {
        // a new stream starts with the daemon's recent history again: fold it from scratch
        traffic.edges.clear();
        traffic.nodes.clear();
        traffic.flows = 0;
        try {
          await streamLines(
            `/v1/flows?last=${MAP_HISTORY}&limit=${MAP_HISTORY}&follow=1`,
            (line) => {
              const l = line as FlowStreamLine;
              if ((l as { type?: string }).type === 'lost') return setLost((n) => n + (l as { count: number }).count);
              if (traffic.add(l as FlowRecord)) scheduleSync();
            },
            ctl.signal,
          );
        } catch {
          // the status poll says what is wrong
        }
        await sleep(2000);
      }
    })();
    return () => ctl.abort();
  }, []);

  useEffect(() => view.current?.select(selected), [selected, mapReady]);
  useEffect(() => view.current?.setPicked(new Set(picked)), [picked, mapReady, trafficSeq]);

  const matches = useMemo(() => (status && search ? searchEndpoints(status.endpoints, search, 20) : []), [status, search]);
  useEffect(() => view.current?.highlight(matches.map((m) => m.name)), [matches, mapReady]);

  const focusOn = async (name: string) => {
    setSearchOpen(false);
    await handle.focus(name);
  };
  const unfocus = async () => {
    await view.current?.unfocus();
    setFocused(undefined);
  };

  const setModeOf = async (names: string[], mode: 'audit' | 'enforce') => {
    const errors: string[] = [];
    for (const name of names) {
      try {
        await send('PUT', `/v1/containers/${encodeURIComponent(name)}/mode`, { mode });
      } catch (e) {
        errors.push(`${name}: ${e instanceof ApiError ? e.errors.join('; ') : (e as Error).message}`);
      }
    }
    await refresh().catch(() => undefined);
    if (errors.length) throw new Error(errors.join('\n'));
  };

  const endpoint = status?.endpoints.find((e) => e.name === selected);
  const modeNames = new Map(status?.endpoints.map((e) => [e.name, modes?.get(e.name)?.mode ?? e.mode]));
  const networks = new Set(status?.endpoints.map((e) => networkOf(e)));
  const drops = [...traffic.nodes.values()].reduce((a, n) => a + n.dropsIn, 0);

  return (
    <div class="layout">
      <header>
        <h1>Bastion</h1>
        <span class="summary" data-testid="summary">
          {status
            ? `${plural(status.endpoints.length, 'container')} · ${plural(networks.size, 'network')} · daemon ${status.daemon.mode} · ${
                status.ok ? 'all stacks in place' : 'STACK MISSING'
              } · ${count(drops)} drops on the map`
            : 'connecting…'}
        </span>
        <div class="search">
          <input
            type="search"
            name="search"
            placeholder="find a container (name, label, address) — Enter focuses"
            value={search}
            onInput={(e) => {
              setSearch((e.target as HTMLInputElement).value);
              setSearchOpen(true);
            }}
            onKeyDown={(e) => {
              if (e.key === 'Enter' && matches[0]) void focusOn(matches[0].name);
            }}
          />
          {searchOpen && search && matches.length > 0 && (
            <ul class="matches">
              {matches.map((m) => (
                <li key={m.name} onClick={() => void focusOn(m.name)}>
                  {m.name} <span class="muted">{m.ipv4}</span>
                </li>
              ))}
            </ul>
          )}
        </div>
        <button onClick={() => view.current?.fit()}>Fit</button>
        {focused ? <button onClick={unfocus}>Show all (Esc)</button> : <button onClick={() => void view.current?.layout()}>Re-layout</button>}
      </header>
      {down && <div class="banner bad">{down}</div>}
      {status?.problems?.length ? (
        <div class="banner bad" data-testid="problems">
          {status.problems.map((p, i) => (
            <div key={i}>{p}</div>
          ))}
        </div>
      ) : null}
      {lost > 0 && <div class="banner warn">{lost} flows were skipped for this page (it fell behind the daemon); the map's counts are low by that much.</div>}
      {notice && (
        <div class="banner" onClick={() => setNotice(undefined)}>
          {notice}
        </div>
      )}
      <main>
        <div class="map-wrap">
          <div id="map" ref={mapEl} data-testid="map" />
          {!mapReady && <div class="map-loading">laying out the map…</div>}
          {focused && (
            <div class="focus-note">
              {focused} and its neighbours · <a onClick={unfocus}>show all</a>
            </div>
          )}
          <Legend />
        </div>
        <aside>
          <nav class="tabs">
            <button class={tab === 'details' ? 'on' : ''} onClick={() => setTab('details')}>
              {endpoint ? endpoint.name : 'Overview'}
            </button>
            <button class={tab === 'learn' ? 'on' : ''} name="tab-learn" onClick={() => setTab('learn')}>
              Learn &amp; enforce{picked.length ? ` (${picked.length})` : ''}
            </button>
          </nav>
          {tab === 'details' && status && endpoint && (
            <ContainerPanel
              endpoint={endpoint}
              status={status}
              graph={graph}
              traffic={traffic}
              trafficSeq={trafficSeq}
              mode={modes?.get(endpoint.name)}
              picked={picked.includes(endpoint.name)}
              focused={focused === endpoint.name}
              onFocus={() => void focusOn(endpoint.name)}
              onUnfocus={unfocus}
              onPick={() => setPicked((p) => (p.includes(endpoint.name) ? p.filter((x) => x !== endpoint.name) : [...p, endpoint.name]))}
              onSetMode={(mode) => {
                setModeBusy(`switching to ${mode}…`);
                setModeOf([endpoint.name], mode)
                  .catch((e: Error) => setNotice(e.message))
                  .finally(() => setModeBusy(undefined));
              }}
              modeBusy={modeBusy}
              onFlows={() => setFlowPreset({ container: endpoint.name, seq: Date.now() })}
              onSelect={(name) => setSelected(name)}
            />
          )}
          {tab === 'details' && status && !endpoint && <Overview status={status} graph={graph} traffic={traffic} trafficSeq={trafficSeq} onSelect={setSelected} />}
          {tab === 'learn' && (
            <Workflow
              picked={picked}
              modes={modeNames}
              onUnpick={(n) => setPicked((p) => p.filter((x) => x !== n))}
              onClear={() => setPicked([])}
              onChanged={() => void refresh().catch(() => undefined)}
              onSetMode={setModeOf}
            />
          )}
        </aside>
      </main>
      <FlowTable
        preset={flowPreset}
        onPeer={(name) => {
          setSelected(name);
          setTab('details');
        }}
      />
    </div>
  );
}

render(<App />, document.getElementById('app')!);
