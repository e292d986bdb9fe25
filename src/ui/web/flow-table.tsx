/**
 * The flow table: the filters of `bastion flows` (sent to the daemon, which
 * filters), live (the NDJSON stream of /v1/flows?follow=1) and pausable: a
 * paused table keeps counting what arrives and shows it on resume.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { FlowRecord, FlowStreamLine } from '../../api/types.js';
import { FILTER_FIELDS, flowQuery, type FlowFilters } from '../model/flow-query.js';
import { ApiError, getJson, streamLines } from './api.js';
import { flowRules, peerText, timeText } from './format.js';

const MAX_ROWS = 500;

export interface FlowTableProps {
  /** filters set from elsewhere (a container's "show its flows") */
  preset?: FlowFilters & { seq: number };
  onPeer(name: string): void;
}

export function FlowTable({ preset, onPeer }: FlowTableProps) {
  const [draft, setDraft] = useState<FlowFilters>({ last: 200 });
  const [filters, setFilters] = useState<FlowFilters>({ last: 200 });
  const [live, setLive] = useState(true);
  const [paused, setPaused] = useState(false);
  const [rows, setRows] = useState<FlowRecord[]>([]);
  const [waiting, setWaiting] = useState(0);
  const [lost, setLost] = useState(0);
  const [error, setError] = useState<string | undefined>();
  const [state, setState] = useState<'connecting' | 'live' | 'done' | 'error'>('connecting');
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  // the filter set on screen: a stream of an earlier one (its last lines, its
  // last flush) must not add rows between the render and the effect's cleanup
  const filtersRef = useRef(filters);
  filtersRef.current = filters;

  useEffect(() => {
    if (!preset) return;
    const { seq: _seq, ...f } = preset;
    const next = { last: 200, ...f };
    setDraft(next);
    setRows([]);
    setFilters(next);
  }, [preset?.seq]);

  // one request (or stream) per filter set
  useEffect(() => {
    const ctl = new AbortController();
    const incoming: FlowRecord[] = [];
    const current = () => !ctl.signal.aborted && filtersRef.current === filters;
    setRows([]);
    setWaiting(0);
    setLost(0);
    setError(undefined);
    setState('connecting');
    const q = flowQuery(filters, live);
    if (!live) {
      getJson<FlowRecord[] | { flows: FlowRecord[] }>(`/v1/flows?${q}`, ctl.signal)
        .then((r) => {
          if (!current()) return;
          setRows((Array.isArray(r) ? r : r.flows).slice(-MAX_ROWS).reverse());
          setState('done');
        })
        .catch((e: Error) => {
          if (ctl.signal.aborted) return;
          setError(e instanceof ApiError ? e.errors.join('\n') : e.message);
          setState('error');
        });
      return () => ctl.abort();
    }
    let retry: ReturnType<typeof setTimeout> | undefined;
    const connect = () => {
      setState('connecting');
      streamLines(
        `/v1/flows?${q}`,
        (line) => {
          if (!current()) return;
          setState('live');
          const l = line as FlowStreamLine;
          if ((l as { type?: string }).type === 'lost') setLost((n) => n + (l as { count: number }).count);
          else incoming.push(l as FlowRecord);
        },
        ctl.signal,
      )
        .then(() => {
          if (!ctl.signal.aborted) retry = setTimeout(connect, 2000);
        })
        .catch((e: Error) => {
          if (ctl.signal.aborted) return;
          setError(e instanceof ApiError ? e.errors.join('\n') : e.message);
          setState('error');
          if (!(e instanceof ApiError && e.status < 500)) retry = setTimeout(connect, 3000);
        });
    };
    connect();
    // rows are added a few times a second, not once per flow
    const flush = setInterval(() => {
      if (!incoming.length || !current()) return;
      if (pausedRef.current) return setWaiting(incoming.length);
      const fresh = incoming.splice(0).reverse();
      setWaiting(0);
      setRows((old) => [...fresh, ...old].slice(0, MAX_ROWS));
    }, 250);
    return () => {
      ctl.abort();
      clearInterval(flush);
      if (retry) clearTimeout(retry);
    };
  }, [filters, live]);

  const apply = (e: Event) => {
    e.preventDefault();
    setRows([]); // in the same render as the new filters: no row of the old ones stays on screen
    setFilters({ ...draft });
  };
  const field = (k: keyof FlowFilters) => (e: Event) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement).value });

  return (
    <section class="flows" data-testid="flow-table">
      <form class="filters" onSubmit={apply}>
        {FILTER_FIELDS.map((f) => (
          <label key={f.key}>
            <span>{f.label}</span>
            <input name={f.key} value={(draft[f.key] as string | undefined) ?? ''} placeholder={f.placeholder} onInput={field(f.key)} size={10} />
          </label>
        ))}
        <label>
          <span>last</span>
          <input name="last" type="number" min={1} max={10000} value={draft.last ?? 200} onInput={(e) => setDraft({ ...draft, last: Number((e.target as HTMLInputElement).value) || 200 })} size={5} />
        </label>
        <button type="submit">Filter</button>
        <button type="button" onClick={() => (setDraft({ last: 200 }), setRows([]), setFilters({ last: 200 }))}>
          Clear
        </button>
        <label class="check">
          <input type="checkbox" name="live" checked={live} onChange={(e) => setLive((e.target as HTMLInputElement).checked)} /> live
        </label>
        {live && (
          <button type="button" name="pause" class={paused ? 'on' : ''} onClick={() => setPaused(!paused)}>
            {paused ? `Resume${waiting ? ` (${waiting} new)` : ''}` : 'Pause'}
          </button>
        )}
        <span class={`stream ${state}`} data-testid="flow-state">
          {state === 'live' ? (paused ? 'paused' : 'live') : state}
          {lost > 0 && <b class="lost"> · {lost} flows lost (this page fell behind)</b>}
        </span>
      </form>
      {error && <div class="error">{error}</div>}
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th>time</th>
              <th>source</th>
              <th>destination</th>
              <th>proto</th>
              <th>verdict</th>
              <th>reason</th>
              <th>policy</th>
              <th>seen by</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r, i) => (
              <tr key={`${r.time}-${i}`} class={`v-${r.verdict}`}>
                <td class="muted">{timeText(r.time)}</td>
                <td>
                  <a onClick={() => r.src.name && onPeer(r.src.name)}>{peerText(r.src)}</a>
                </td>
                <td>
                  <a onClick={() => r.dst.name && onPeer(r.dst.name)}>{peerText(r.dst)}</a>
                </td>
                <td>{r.protocol}</td>
                <td class="verdict">{r.verdict}</td>
                <td>{r.reason}</td>
                <td>{flowRules(r)}</td>
                <td class="muted">{r.endpoint ?? ''}</td>
              </tr>
            ))}
            {!rows.length && (
              <tr>
                <td colSpan={8} class="muted">
                  {state === 'connecting' ? 'connecting…' : 'no flows match'}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}
