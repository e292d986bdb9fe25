/**
 * Flows, learning and replay over what this daemon recorded: GET /v1/flows
 * (the recent flows in memory, or the history on disk for a time window),
 * POST /v1/learn and POST /v1/verify. The logic is src/learn/ (the same
 * code `bastion learn --flows FILE` and `bastion policy verify --flows FILE`
 * run); this module only chooses the records and checks the requests.
 */
import type { FlowStore } from '../agent/flow-log.js';
import type { FlowHistory } from '../flows/history.js';
import type { FlowRecord } from '../flows/record.js';
import { FlowFilterError, flowPredicate, hasTimeBounds, matchesFlow, parseFlowFilter, parseTimePoint, type FlowFilter, type FlowFilterInput } from '../flows/filter.js';
import { Learner } from '../learn/learn.js';
import { Replayer } from '../learn/replay.js';
import { parseCandidate } from '../learn/candidate.js';
import { fail, succeed, type LearnAnswer, type LearnRequest, type Outcome, type VerifyAnswer, type VerifyRequest } from '../api/types.js';

/** the most records one GET /v1/flows answers */
export const MAX_FLOWS_PER_QUERY = 100_000;

export interface FlowQuery {
  input: FlowFilterInput;
  /** how many of the last matching records; undefined: 100 */
  last?: string;
}

function isStringMap(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

export class LearningService {
  constructor(
    private readonly flows: FlowStore,
    private readonly history: FlowHistory | undefined,
  ) {}

  /** The limit of a query: a number, or "all" (up to MAX_FLOWS_PER_QUERY). */
  static parseLast(last: string | undefined): number | string {
    if (last === undefined || last === '') return 100;
    if (last === 'all') return MAX_FLOWS_PER_QUERY;
    if (!/^\d+$/.test(last)) return `last "${last}": expected a number of flows, or all`;
    return Math.min(Number(last), MAX_FLOWS_PER_QUERY);
  }

  /** The filter of a query, or why it is wrong. */
  static filterOf(input: FlowFilterInput, now = Date.now()): FlowFilter | string {
    try {
      return parseFlowFilter(input, now);
    } catch (err) {
      if (err instanceof FlowFilterError) return err.message;
      throw err;
    }
  }

  /**
   * GET /v1/flows. Without a time window: the recent flows in memory (the
   * last 10,000). With since or until: the history on disk (every flow this
   * daemon and its predecessors recorded, within the size cap), or, without
   * a history, the recent flows in that window.
   */
  async query(q: FlowQuery): Promise<Outcome<FlowRecord[]>> {
    const last = LearningService.parseLast(q.last);
    if (typeof last === 'string') return fail('bad-request', [last]);
    const filter = LearningService.filterOf(q.input);
    if (typeof filter === 'string') return fail('bad-request', [filter]);
    if (last === 0) return succeed([]);
    if (hasTimeBounds(filter) && this.history) return succeed(await this.history.recent(last, filter));
    return succeed(this.flows.recent(last, flowPredicate(filter)));
  }

  /** The records of a time window, oldest first: the history when there is one, else the ring. */
  private async *window(filter: FlowFilter): AsyncGenerator<FlowRecord> {
    if (this.history) {
      yield* this.history.records(filter);
      return;
    }
    for (const r of this.flows.recent(Number.MAX_SAFE_INTEGER)) if (matchesFlow(filter, r)) yield r;
  }

  private static since(v: unknown): FlowFilter | string {
    if (v === undefined) return {};
    if (typeof v !== 'string') return 'since: expected a duration (24h) or an ISO time';
    try {
      return { since: parseTimePoint(v, 'since', Date.now()) };
    } catch (err) {
      return (err as Error).message;
    }
  }

  /** POST /v1/learn */
  async learn(body: unknown): Promise<Outcome<LearnAnswer>> {
    const req = (body ?? {}) as LearnRequest;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return fail('invalid', ['expected a JSON object with select, containers, since, mergePorts']);
    const errors: string[] = [];
    if (req.select !== undefined && !isStringMap(req.select)) errors.push('select: expected a map of label to value, such as {"app":"web"}');
    if (req.containers !== undefined && !isStringList(req.containers)) errors.push('containers: expected a list of container names');
    if (req.mergePorts !== undefined && typeof req.mergePorts !== 'boolean') errors.push('mergePorts: expected true or false');
    const filter = LearningService.since(req.since);
    if (typeof filter === 'string') errors.push(filter);
    if (errors.length || typeof filter === 'string') return fail('invalid', errors);
    const learner = new Learner({
      ...(req.select ? { select: req.select } : {}),
      ...(req.containers ? { containers: req.containers } : {}),
      ...(req.mergePorts ? { mergePorts: true } : {}),
    });
    for await (const r of this.window(filter)) learner.add(r);
    const res = learner.result();
    return succeed({ document: res.document, yaml: res.yaml, flows: res.flows, skipped: res.skipped, warnings: res.warnings });
  }

  /** POST /v1/verify */
  async verify(body: unknown): Promise<Outcome<VerifyAnswer>> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return fail('invalid', ['expected a JSON object with candidate (a policies document), since, containers']);
    const req = body as VerifyRequest;
    const errors: string[] = [];
    if (typeof req.candidate !== 'string' || req.candidate.trim() === '') errors.push('candidate: expected a policies document (YAML or JSON text)');
    if (req.containers !== undefined && !isStringList(req.containers)) errors.push('containers: expected a list of container names');
    if (req.select !== undefined && !isStringMap(req.select)) errors.push('select: expected a map of label to value');
    const filter = LearningService.since(req.since);
    if (typeof filter === 'string') errors.push(filter);
    if (errors.length || typeof filter === 'string') return fail('invalid', errors);
    const parsed = parseCandidate(req.candidate, 'candidate');
    if (!parsed.ok) return fail('invalid', parsed.errors);
    const replayer = new Replayer({ ...(req.containers ? { containers: req.containers } : {}), ...(req.select ? { select: req.select } : {}) });
    for await (const r of this.window(filter)) replayer.add(r);
    const res = replayer.judge(parsed.rules);
    return succeed({ ok: res.ok, replayed: res.replayed, wouldDrop: res.wouldDrop, newlyAllowed: res.newlyAllowed, skipped: res.skipped });
  }
}
