/**
 * Learn → verify → apply, and audit/enforce: the console's changes. Each
 * step is one request to the API the CLI uses (contract:
 * CONTRACT-learn-console.md), so the daemon validates what the console sends
 * exactly as it validates `bastion learn`, `bastion policy verify`,
 * `bastion policy add -f` and `bastion mode`:
 *
 *   POST /v1/learn    { containers, since, mergePorts }  → { yaml, document, flows }
 *   POST /v1/verify   { candidate: yaml, since, containers } → { ok, replayed, wouldDrop, newlyAllowed }
 *   POST /v1/policies?dryRun=1, then POST /v1/policies     (the YAML, as `policy add -f` sends it)
 *   PUT  /v1/containers/NAME/mode { mode }
 */
import { useState } from 'preact/hooks';
import type { FlowRecord, PolicyAddResult } from '../../api/types.js';
import { ApiError, send } from './api.js';
import { flowRules, peerText, plural } from './format.js';

interface LearnAnswer {
  ok: true;
  yaml: string;
  document?: { policies?: unknown[] };
  flows: number;
}

interface VerifyAnswer {
  ok: boolean;
  replayed: number;
  wouldDrop: FlowRecord[];
  newlyAllowed: FlowRecord[];
}

export interface WorkflowProps {
  picked: string[];
  modes: Map<string, string>;
  onUnpick(name: string): void;
  onClear(): void;
  /** a change was applied: reload status and graph */
  onChanged(): void;
  onSetMode(names: string[], mode: 'audit' | 'enforce'): Promise<void>;
}

function messages(e: unknown): string[] {
  if (e instanceof ApiError) {
    if (e.code === 'no-route') return [...e.errors, 'this daemon does not serve that route yet (the learning API of issue 14)'];
    return e.errors;
  }
  return [(e as Error).message];
}

function FlowList({ flows, empty }: { flows: FlowRecord[]; empty: string }) {
  if (!flows.length) return <p class="muted">{empty}</p>;
  return (
    <table class="mini">
      <tbody>
        {flows.slice(0, 50).map((r, i) => (
          <tr key={i} class={`v-${r.verdict}`}>
            <td>
              {peerText(r.src)} → {peerText(r.dst)}
            </td>
            <td>{r.protocol}</td>
            <td class="verdict">{r.verdict}</td>
            <td class="muted">{flowRules(r) || r.reason}</td>
          </tr>
        ))}
        {flows.length > 50 && (
          <tr>
            <td class="muted">… and {flows.length - 50} more</td>
          </tr>
        )}
      </tbody>
    </table>
  );
}

export function Workflow(p: WorkflowProps) {
  const [since, setSince] = useState('24h');
  const [mergePorts, setMergePorts] = useState(false);
  const [yaml, setYaml] = useState('');
  const [learned, setLearned] = useState<LearnAnswer | undefined>();
  const [verdict, setVerdict] = useState<VerifyAnswer | undefined>();
  const [verifiedText, setVerifiedText] = useState<string | undefined>();
  const [preview, setPreview] = useState<PolicyAddResult | undefined>();
  const [applied, setApplied] = useState<PolicyAddResult | undefined>();
  const [busy, setBusy] = useState<string | undefined>();
  const [errors, setErrors] = useState<string[]>([]);

  const step = async (name: string, f: () => Promise<void>) => {
    setBusy(name);
    setErrors([]);
    try {
      await f();
    } catch (e) {
      setErrors(messages(e));
    } finally {
      setBusy(undefined);
    }
  };

  const learn = () =>
    step('learning…', async () => {
      const r = await send<LearnAnswer>('POST', '/v1/learn', { containers: p.picked, since, mergePorts });
      setLearned(r);
      setYaml(r.yaml);
      setVerdict(undefined);
      setVerifiedText(undefined);
      setPreview(undefined);
      setApplied(undefined);
    });
  const verify = () =>
    step('replaying…', async () => {
      const r = await send<VerifyAnswer>('POST', '/v1/verify', { candidate: yaml, since, containers: p.picked });
      setVerdict(r);
      setVerifiedText(yaml);
      setPreview(undefined);
    });
  const dryRun = () =>
    step('checking…', async () => {
      setPreview(await send<PolicyAddResult>('POST', '/v1/policies?dryRun=1&source=console', yaml, 'application/yaml'));
      setApplied(undefined);
    });
  const apply = () =>
    step('applying…', async () => {
      setApplied(await send<PolicyAddResult>('POST', '/v1/policies?source=console', yaml, 'application/yaml'));
      setPreview(undefined);
      p.onChanged();
    });
  const setMode = (mode: 'audit' | 'enforce') => step(`switching to ${mode}…`, () => p.onSetMode(p.picked, mode));

  const stale = verifiedText !== undefined && verifiedText !== yaml;
  return (
    <div class="panel workflow" data-testid="workflow">
      <h2>Learn, verify, enforce</h2>
      <p class="muted small">
        Pick containers (shift-click on the map), propose the policy their observed traffic needs, replay the recorded flows against it, then apply it
        and switch them to enforce. Every step goes through the daemon's API, validated as the CLI's.
      </p>
      <h3>Containers</h3>
      <div class="picked" data-testid="picked">
        {p.picked.length ? (
          p.picked.map((n) => (
            <span class="chip" key={n}>
              {n} <span class={`badge mode-${p.modes.get(n) ?? ''}`}>{p.modes.get(n) ?? '?'}</span>
              <a class="x" title="unpick" onClick={() => p.onUnpick(n)}>
                ×
              </a>
            </span>
          ))
        ) : (
          <span class="muted">none picked: shift-click containers on the map</span>
        )}
        {p.picked.length > 0 && (
          <a class="small" onClick={p.onClear}>
            clear
          </a>
        )}
      </div>
      <div class="actions">
        <button name="audit" disabled={!p.picked.length || !!busy} onClick={() => setMode('audit')}>
          Audit mode
        </button>
        <button name="enforce" disabled={!p.picked.length || !!busy} onClick={() => setMode('enforce')}>
          Enforce mode
        </button>
      </div>

      <h3>1 · Propose</h3>
      <div class="actions">
        <label>
          from the last <input name="since" value={since} size={6} onInput={(e) => setSince((e.target as HTMLInputElement).value)} />
        </label>
        <label class="check">
          <input type="checkbox" checked={mergePorts} onChange={(e) => setMergePorts((e.target as HTMLInputElement).checked)} /> merge ports
        </label>
        <button name="learn" disabled={!p.picked.length || !!busy} onClick={learn}>
          Propose policy
        </button>
      </div>
      {learned && (
        <p class="small" data-testid="learned">
          from {plural(learned.flows, 'flow')} · {plural(learned.document?.policies?.length ?? 0, 'policy', 'policies')} (edit before verifying if you like)
        </p>
      )}
      <textarea
        name="candidate"
        spellcheck={false}
        value={yaml}
        placeholder={'the proposed policies appear here; or paste a policies: document\npolicies:\n  - { name: web-to-db, from: { app: web }, to: { app: db }, ports: ["5432/tcp"] }'}
        onInput={(e) => setYaml((e.target as HTMLTextAreaElement).value)}
        rows={yaml ? 14 : 4}
      />

      <h3>2 · Verify by replay</h3>
      <div class="actions">
        <button name="verify" disabled={!yaml.trim() || !!busy} onClick={verify}>
          Replay recorded flows
        </button>
        {stale && <span class="warn small">the policy changed since the last replay</span>}
      </div>
      {verdict && (
        <div class={`verdict-box ${verdict.ok ? 'ok' : 'bad'}`} data-testid="verify-result" data-ok={String(verdict.ok)}>
          <b>{verdict.ok ? '✓ every recorded flow that went through is allowed' : '✕ some recorded flows would be dropped'}</b> ·{' '}
          {plural(verdict.replayed, 'flow')} replayed
          <h4>Would be dropped ({verdict.wouldDrop.length})</h4>
          <FlowList flows={verdict.wouldDrop} empty="none" />
          <h4>Newly allowed ({verdict.newlyAllowed.length})</h4>
          <FlowList flows={verdict.newlyAllowed} empty="none: it allows nothing that was dropped" />
        </div>
      )}

      <h3>3 · Apply</h3>
      <div class="actions">
        <button name="dry-run" disabled={!yaml.trim() || !!busy} onClick={dryRun}>
          Check (dry run)
        </button>
        <button name="apply" class="primary" disabled={!yaml.trim() || !!busy} onClick={apply}>
          {verdict && !verdict.ok && !stale ? 'Apply anyway' : 'Apply'}
        </button>
      </div>
      {preview && (
        <p class="small" data-testid="dry-run-result">
          would {preview.policies.map((x) => `${x.action === 'created' ? 'create' : 'replace'} ${x.name}`).join(', ') || 'change nothing'}
        </p>
      )}
      {applied && 'entries' in applied && (
        <p class="ok small" data-testid="applied">
          applied: {applied.policies.map((x) => `${x.name} (${x.action})`).join(', ')} · {applied.entries} map entries in {applied.ms.toFixed(1)} ms
        </p>
      )}
      {busy && <p class="muted">{busy}</p>}
      {errors.length > 0 && (
        <div class="error" data-testid="workflow-error">
          {errors.map((e, i) => (
            <div key={i}>{e}</div>
          ))}
        </div>
      )}
    </div>
  );
}
