/**
 * Label selectors, the one module for every front end: the internal model's
 * (src/policy/model.ts), Bastion's documents (`{ app: web }` or the explicit
 * form), Kubernetes objects (V1LabelSelector), Docker's `--select`. The
 * Kubernetes semantics (metav1.LabelSelector):
 *
 * - matchLabels and every matchExpressions requirement must all hold (AND);
 * - In: the key is present and its value is listed;
 * - NotIn: the key is absent, or its value is not listed;
 * - Exists / DoesNotExist: the key is present / absent;
 * - the empty selector ({}) matches everything.
 *
 * Plus parsing of Bastion's document form, validation (the API server's
 * rules for keys, values and operators, in Bastion's or the API server's
 * words), a canonical string form (equal for selectors that differ only in
 * the order of their labels, requirements or values; used as a cache key), a
 * short human form for messages, and indexes of label sets and of
 * selectors. Pure functions, no I/O.
 */
import type { LabelSelector, LabelSelectorRequirement } from './model.js';
import { describeValue, isPlainObject, quote, unknownFields, type Issue, type IssueCode, type Path } from './errors.js';

export type Labels = Readonly<Record<string, string>>;

/**
 * A selector of either front end: the model's LabelSelector and the
 * Kubernetes API's V1LabelSelector both have this shape (the operator of the
 * latter is any string; validation rejects the unknown ones).
 */
export interface SelectorLike {
  matchLabels?: Readonly<Record<string, string>>;
  matchExpressions?: readonly Requirement[];
}

export interface Requirement {
  key: string;
  operator: string;
  values?: readonly string[];
}

const OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;

/** Does `labels` satisfy `selector`? Assumes a valid selector (an unknown operator never matches). */
export function matches(selector: SelectorLike, labels: Labels): boolean {
  const ml = selector.matchLabels;
  if (ml !== undefined) {
    for (const k in ml) {
      if (!Object.hasOwn(ml, k)) continue;
      if (!Object.hasOwn(labels, k) || labels[k] !== ml[k]) return false;
    }
  }
  const me = selector.matchExpressions;
  if (me !== undefined) {
    for (const req of me) if (!requirementMatches(req, labels)) return false;
  }
  return true;
}

export function requirementMatches(req: Requirement, labels: Labels): boolean {
  const has = Object.hasOwn(labels, req.key);
  switch (req.operator) {
    case 'In':
      return has && (req.values ?? []).includes(labels[req.key]!);
    case 'NotIn':
      return !has || !(req.values ?? []).includes(labels[req.key]!);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    default:
      return false;
  }
}

/** True for {} (and for selectors whose parts are all empty). */
export function isEmptySelector(selector: SelectorLike): boolean {
  return Object.keys(selector.matchLabels ?? {}).length === 0 && (selector.matchExpressions ?? []).length === 0;
}

// ------------------------------------------------------------ validation
//
// One validator, two wordings: Bastion's own (the config file, policies
// documents) and the Kubernetes API server's (objects read by the k8s
// commands, which users compare with what kubectl says). The rules are the
// API server's in both: a key is [prefix/]name, the prefix a DNS subdomain of
// at most 253 characters, the name and the value at most 63 characters of
// alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric.

const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A lowercase RFC 1123 subdomain ("example.com"), without its length limit. */
export function isDns1123Subdomain(v: string): boolean {
  return DNS1123_SUBDOMAIN.test(v);
}

/** What is wrong with a label key. */
export type LabelKeyProblem =
  | { kind: 'slashes' }
  | { kind: 'prefix-empty' }
  | { kind: 'prefix-too-long'; length: number }
  | { kind: 'prefix-format' }
  | { kind: 'name-empty' }
  | { kind: 'name-too-long'; length: number }
  | { kind: 'name-format' };

/** What is wrong with a label value. */
export type LabelValueProblem = { kind: 'too-long'; length: number } | { kind: 'format' };

export function labelKeyProblem(key: string): LabelKeyProblem | undefined {
  const parts = key.split('/');
  let name: string;
  if (parts.length === 1) name = parts[0]!;
  else if (parts.length === 2) {
    const prefix = parts[0]!;
    name = parts[1]!;
    if (prefix.length === 0) return { kind: 'prefix-empty' };
    if (prefix.length > 253) return { kind: 'prefix-too-long', length: prefix.length };
    if (!DNS1123_SUBDOMAIN.test(prefix)) return { kind: 'prefix-format' };
  } else {
    return { kind: 'slashes' };
  }
  if (name.length === 0) return { kind: 'name-empty' };
  if (name.length > 63) return { kind: 'name-too-long', length: name.length };
  if (!QUALIFIED_NAME.test(name)) return { kind: 'name-format' };
  return undefined;
}

export function labelValueProblem(v: string): LabelValueProblem | undefined {
  if (v.length > 63) return { kind: 'too-long', length: v.length };
  if (v.length > 0 && !QUALIFIED_NAME.test(v)) return { kind: 'format' };
  return undefined;
}

/** The words of one front end for what the validator finds. */
export interface LabelMessages {
  key(p: LabelKeyProblem): string;
  value(p: LabelValueProblem): string;
  /** a key (or a value) that is wrong, and why */
  badKey(key: string, why: string): string;
  badValue(value: string, why: string): string;
  /** a label value that is not a string (a number or a boolean in YAML) */
  valueNotString: string;
  valuesRequired(operator: string): string;
  valuesForbidden(operator: string): string;
  badOperator(operator: string): string;
  /** where a label's key and value problems are reported, from the labels' own path */
  keyPath(base: Path, key: string): Path;
  valuePath(base: Path, key: string): Path;
}

/** Bastion's wording: the config file and policies documents. */
export const BASTION_LABEL_MESSAGES: LabelMessages = {
  key: (p) => {
    switch (p.kind) {
      case 'slashes':
        return "a label key is an optional DNS subdomain prefix and a name, separated by one '/'";
      case 'prefix-empty':
        return 'the prefix before "/" must be non-empty';
      case 'prefix-too-long':
        return `the prefix must be no more than 253 characters (is ${p.length})`;
      case 'prefix-format':
        return "the prefix must be a DNS subdomain: lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric";
      case 'name-empty':
        return 'the name must be non-empty';
      case 'name-too-long':
        return `the name must be no more than 63 characters (is ${p.length})`;
      case 'name-format':
        return "the name must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric";
    }
  },
  value: (p) =>
    p.kind === 'too-long'
      ? `must be no more than 63 characters (is ${p.length})`
      : "must be empty or consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
  badKey: (k, why) => `${quote(k)} is not a valid label key: ${why}`,
  badValue: (v, why) => `${quote(v)} is not a valid label value: ${why}`,
  valueNotString: 'a label value must be a string (quote it)',
  valuesRequired: (op) => `must be a non-empty list when the operator is ${op}`,
  valuesForbidden: (op) => `must be empty when the operator is ${op}`,
  badOperator: (op) => `${quote(op)} is not an operator: expected one of ${OPERATORS.join(', ')}`,
  keyPath: (base, k) => [...base, k],
  valuePath: (base, k) => [...base, k],
};

/** The Kubernetes API server's wording (k8s.io/apimachinery validation): Kubernetes objects. */
export const K8S_LABEL_MESSAGES: LabelMessages = {
  key: (p) => {
    switch (p.kind) {
      case 'slashes':
        return "a qualified name must consist of an optional DNS subdomain prefix and a name, separated by at most one '/'";
      case 'prefix-empty':
        return 'prefix part must be non-empty';
      case 'prefix-too-long':
        return `prefix part must be no more than 253 characters (is ${p.length})`;
      case 'prefix-format':
        return "prefix part must be a lowercase RFC 1123 subdomain: lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric";
      case 'name-empty':
        return 'name part must be non-empty';
      case 'name-too-long':
        return `name part must be no more than 63 characters (is ${p.length})`;
      case 'name-format':
        return "name part must consist of alphanumerics, '-', '_' or '.', and must start and end with an alphanumeric";
    }
  },
  value: (p) =>
    p.kind === 'too-long'
      ? `must be no more than 63 characters (is ${p.length})`
      : "a label value must be empty or consist of alphanumerics, '-', '_' or '.', and must start and end with an alphanumeric",
  badKey: (k, why) => `invalid label key ${quote(k)}: ${why}`,
  badValue: (v, why) => `invalid label value ${quote(v)}: ${why}`,
  valueNotString: 'invalid label value: must be a string',
  valuesRequired: (op) => `must be specified when operator is ${op}`,
  valuesForbidden: (op) => `may not be specified when operator is ${op}`,
  badOperator: (op) => `${quote(op)} is not a valid selector operator (${OPERATORS.join(', ')})`,
  // the API server reports a bad key on the map, a bad value on its key (field.Path.Key)
  keyPath: (base) => base,
  valuePath: (base, k) => [...base, { key: k }],
};

/** undefined when `key` is a valid label key ([prefix/]name), else why not. */
export function checkLabelKey(key: string, messages: LabelMessages = BASTION_LABEL_MESSAGES): string | undefined {
  const p = labelKeyProblem(key);
  return p && messages.key(p);
}

/** undefined when `v` is a valid label value, else why not. */
export function checkLabelValue(v: string, messages: LabelMessages = BASTION_LABEL_MESSAGES): string | undefined {
  const p = labelValueProblem(v);
  return p && messages.value(p);
}

/** Validates labels (a label set, or a matchLabels map) at `base`. */
export function validateLabels(
  labels: Readonly<Record<string, unknown>> | undefined,
  base: Path = [],
  messages: LabelMessages = BASTION_LABEL_MESSAGES,
): Issue[] {
  const out: Issue[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) {
    const ek = checkLabelKey(k, messages);
    if (ek) out.push({ code: 'invalid-value', path: messages.keyPath(base, k), message: messages.badKey(k, ek) });
    if (typeof v !== 'string') {
      out.push({ code: 'invalid-type', path: messages.valuePath(base, k), message: messages.valueNotString });
      continue;
    }
    const ev = checkLabelValue(v, messages);
    if (ev) out.push({ code: 'invalid-value', path: messages.valuePath(base, k), message: messages.badValue(v, ev) });
  }
  return out;
}

/**
 * Validates a selector as the Kubernetes API server does: label keys and
 * values, known operators, In/NotIn with a non-empty values list,
 * Exists/DoesNotExist without values. Paths start at `base`.
 */
export function validateSelector(
  selector: SelectorLike,
  base: Path = [],
  messages: LabelMessages = BASTION_LABEL_MESSAGES,
): Issue[] {
  const out = validateLabels(selector.matchLabels, [...base, 'matchLabels'], messages);
  (selector.matchExpressions ?? []).forEach((r, i) => {
    const f = [...base, 'matchExpressions', i];
    const ek = typeof r.key === 'string' ? checkLabelKey(r.key, messages) : 'must be a string';
    if (ek) out.push({ code: 'invalid-value', path: [...f, 'key'], message: messages.badKey(String(r.key), ek) });
    const values = r.values ?? [];
    switch (r.operator) {
      case 'In':
      case 'NotIn':
        if (values.length === 0) out.push({ code: 'required', path: [...f, 'values'], message: messages.valuesRequired(r.operator) });
        values.forEach((v, j) => {
          const ev = typeof v === 'string' ? checkLabelValue(v, messages) : 'must be a string';
          if (ev) out.push({ code: 'invalid-value', path: [...f, 'values', j], message: messages.badValue(String(v), ev) });
        });
        break;
      case 'Exists':
      case 'DoesNotExist':
        if (values.length > 0) out.push({ code: 'not-allowed', path: [...f, 'values'], message: messages.valuesForbidden(r.operator) });
        break;
      default:
        out.push({ code: 'invalid-value', path: [...f, 'operator'], message: messages.badOperator(String(r.operator)) });
    }
  });
  return out;
}

/** A selector of these parts, without the empty ones ({} when both are). */
export function selectorOf(matchLabels: Record<string, string>, matchExpressions: LabelSelectorRequirement[]): LabelSelector {
  return {
    ...(Object.keys(matchLabels).length ? { matchLabels } : {}),
    ...(matchExpressions.length ? { matchExpressions } : {}),
  };
}

/**
 * The selector that matches what all of `sels` match, or null when that is
 * nothing (one of them is null, the null selector, or two of their
 * matchLabels contradict).
 */
export function selectorAnd(...sels: Array<LabelSelector | null>): LabelSelector | null {
  const matchLabels: Record<string, string> = {};
  const matchExpressions: LabelSelectorRequirement[] = [];
  for (const s of sels) {
    if (s === null) return null;
    for (const [k, v] of Object.entries(s.matchLabels ?? {})) {
      if (Object.hasOwn(matchLabels, k) && matchLabels[k] !== v) return null;
      matchLabels[k] = v;
    }
    matchExpressions.push(...(s.matchExpressions ?? []));
  }
  return selectorOf(matchLabels, matchExpressions);
}

// ------------------------------------------------------------- parsing

const SELECTOR_FIELDS = ['matchLabels', 'matchExpressions'];
const REQUIREMENT_FIELDS = ['key', 'operator', 'values'];

/**
 * A selector as Bastion's documents write it: a plain map of labels
 * (`{ app: web }`, the matchLabels of a selector), or the explicit form with
 * matchLabels and/or matchExpressions. The selector, or every issue of it
 * (paths from the selector itself).
 */
export function parseSelector(v: Readonly<Record<string, unknown>>): { ok: true; selector: LabelSelector } | { ok: false; issues: Issue[] } {
  const explicit = Object.keys(v).some((k) => SELECTOR_FIELDS.includes(k));
  if (!explicit) {
    const issues = validateLabels(v);
    if (issues.length) return { ok: false, issues };
    return { ok: true, selector: Object.keys(v).length ? { matchLabels: { ...(v as Record<string, string>) } } : {} };
  }
  const issues = unknownFields(v, SELECTOR_FIELDS);
  const add = (code: IssueCode, path: Path, message: string) => issues.push({ code, path, message });
  let typed = true;
  const selector: LabelSelector = {};
  const ml = v.matchLabels;
  const me = v.matchExpressions;
  if (ml !== undefined) {
    if (!isPlainObject(ml)) {
      add('invalid-type', ['matchLabels'], `expected a mapping of labels, got ${describeValue(ml)}`);
      typed = false;
    } else if (Object.keys(ml).length) selector.matchLabels = ml as Record<string, string>;
  }
  if (me !== undefined) {
    if (!Array.isArray(me)) {
      add('invalid-type', ['matchExpressions'], `expected a list of requirements, got ${describeValue(me)}`);
      typed = false;
    } else {
      const reqs: LabelSelectorRequirement[] = [];
      me.forEach((r, i) => {
        const at: Path = ['matchExpressions', i];
        if (!isPlainObject(r)) {
          add('invalid-type', at, `expected a mapping with key, operator and values, got ${describeValue(r)}`);
          typed = false;
          return;
        }
        issues.push(...unknownFields(r, REQUIREMENT_FIELDS, at));
        for (const f of ['key', 'operator'] as const) {
          if (typeof r[f] === 'string') continue;
          if (r[f] === undefined) add('required', [...at, f], 'required');
          else add('invalid-type', [...at, f], `expected a string, got ${describeValue(r[f])}`);
          typed = false;
        }
        if (r.values !== undefined && (!Array.isArray(r.values) || r.values.some((x) => typeof x !== 'string'))) {
          add('invalid-type', [...at, 'values'], `expected a list of strings, got ${describeValue(r.values)}`);
          typed = false;
        }
        reqs.push({
          key: r.key as string,
          operator: r.operator as LabelSelectorRequirement['operator'],
          ...(Array.isArray(r.values) ? { values: [...(r.values as string[])] } : {}),
        });
      });
      if (reqs.length) selector.matchExpressions = reqs;
    }
  }
  if (typed) issues.push(...validateSelector(selector));
  return issues.length ? { ok: false, issues } : { ok: true, selector };
}

/**
 * A selector in the explicit document form, which parseSelector reads back
 * to the same selector: no label key can then be read as a field (cidr,
 * except) of a policy end.
 */
export function selectorDocument(sel: SelectorLike): { matchLabels?: Record<string, string>; matchExpressions?: SelectorLike['matchExpressions'] } {
  return {
    ...(sel.matchLabels && Object.keys(sel.matchLabels).length ? { matchLabels: { ...sel.matchLabels } } : {}),
    ...(sel.matchExpressions?.length ? { matchExpressions: sel.matchExpressions } : {}),
  };
}

/** "KEY=VALUE" (a label on a command line) → key and value, or undefined (no "=", or nothing before it). */
export function parseLabelAssignment(text: string): { key: string; value: string } | undefined {
  const i = text.indexOf('=');
  return i <= 0 ? undefined : { key: text.slice(0, i), value: text.slice(i + 1) };
}

// ---------------------------------------------------------- string forms

/**
 * Canonical string form: identical for selectors with the same labels and
 * requirements in any order, with duplicate values or requirements removed.
 * Two selectors with the same canonical form match exactly the same label
 * sets. (Different forms may still be equivalent, e.g. {a: x} and
 * a In (x); that only costs a cache miss.)
 */
export function canonicalSelector(selector: SelectorLike): string {
  // JSON-quoted pieces: a quoted string cannot contain the separators used around it
  let ml = '';
  const ml0 = selector.matchLabels;
  if (ml0) {
    const keys = Object.keys(ml0);
    if (keys.length > 1) keys.sort(cmp);
    for (const k of keys) ml += `${JSON.stringify(k)}=${JSON.stringify(ml0[k])},`;
  }
  let me = '';
  const me0 = selector.matchExpressions;
  if (me0 && me0.length) {
    const reqs = new Set<string>();
    for (const r of me0) {
      const vals = r.values && r.values.length ? [...new Set(r.values)].sort(cmp).map((v) => JSON.stringify(v)).join(',') : '';
      reqs.add(`${JSON.stringify(r.key)} ${JSON.stringify(r.operator)} [${vals}]`);
    }
    me = [...reqs].sort(cmp).join(';');
  }
  return `{${ml}|${me}}`;
}

/** Short human form, as kubectl prints it: "{}" (everything), "app=web,tier in (a,b),!debug"; "<none>" for no selector. */
export function formatSelector(selector: SelectorLike | undefined): string {
  if (selector === undefined) return '<none>';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) parts.push(`${k}=${v}`);
  for (const r of selector.matchExpressions ?? []) {
    const vals = (r.values ?? []).join(',');
    if (r.operator === 'In') parts.push(`${r.key} in (${vals})`);
    else if (r.operator === 'NotIn') parts.push(`${r.key} notin (${vals})`);
    else if (r.operator === 'Exists') parts.push(r.key);
    else if (r.operator === 'DoesNotExist') parts.push(`!${r.key}`);
    else parts.push(`${r.key} ${String(r.operator)} (${vals})`);
  }
  return parts.length === 0 ? '{}' : parts.join(',');
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ------------------------------------------------------------ index

/**
 * An inverted index of label sets (key=value → members) that answers "which
 * members does this selector match" without scanning every member when the
 * selector has a positive constraint (a matchLabels entry, In or Exists):
 * candidates come from the smallest posting list and are then checked with
 * matches(). Selectors with only negative constraints (NotIn, DoesNotExist,
 * or {}) scan all members.
 */
export class LabelIndex<K> {
  private readonly labels = new Map<K, Labels>();
  /** key -> value -> members */
  private readonly byPair = new Map<string, Map<string, Set<K>>>();
  /** key -> members that have the key */
  private readonly byKey = new Map<string, Set<K>>();

  get size(): number {
    return this.labels.size;
  }

  has(member: K): boolean {
    return this.labels.has(member);
  }

  labelsOf(member: K): Labels | undefined {
    return this.labels.get(member);
  }

  members(): IterableIterator<K> {
    return this.labels.keys();
  }

  set(member: K, labels: Labels): void {
    this.delete(member);
    this.labels.set(member, labels);
    for (const k of Object.keys(labels)) {
      const v = labels[k]!;
      let byV = this.byPair.get(k);
      if (!byV) this.byPair.set(k, (byV = new Map()));
      let s = byV.get(v);
      if (!s) byV.set(v, (s = new Set()));
      s.add(member);
      let ks = this.byKey.get(k);
      if (!ks) this.byKey.set(k, (ks = new Set()));
      ks.add(member);
    }
  }

  delete(member: K): void {
    const old = this.labels.get(member);
    if (!old) return;
    this.labels.delete(member);
    for (const k of Object.keys(old)) {
      const byV = this.byPair.get(k)!;
      const s = byV.get(old[k]!)!;
      s.delete(member);
      if (s.size === 0) byV.delete(old[k]!);
      if (byV.size === 0) this.byPair.delete(k);
      const ks = this.byKey.get(k)!;
      ks.delete(member);
      if (ks.size === 0) this.byKey.delete(k);
    }
  }

  /** Every member whose labels the selector matches (in no particular order). */
  select(selector: SelectorLike): K[] {
    let best: Iterable<K> | undefined;
    let bestSize = Infinity;
    const consider = (c: Iterable<K>, size: number) => {
      if (size < bestSize) {
        best = c;
        bestSize = size;
      }
    };
    const EMPTY: K[] = [];
    for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
      const s = this.byPair.get(k)?.get(v);
      if (!s) return EMPTY;
      consider(s, s.size);
    }
    for (const r of selector.matchExpressions ?? []) {
      if (r.operator === 'Exists') {
        const s = this.byKey.get(r.key);
        if (!s) return EMPTY;
        consider(s, s.size);
      } else if (r.operator === 'In') {
        const byV = this.byPair.get(r.key);
        if (!byV) return EMPTY;
        const union: K[] = [];
        for (const v of new Set(r.values ?? [])) for (const m of byV.get(v) ?? []) union.push(m);
        if (union.length === 0) return EMPTY;
        consider(union, union.length);
      }
    }
    const out: K[] = [];
    for (const m of best ?? this.labels.keys()) {
      if (matches(selector, this.labels.get(m)!)) out.push(m);
    }
    return out;
  }
}

/**
 * The reverse of LabelIndex: selectors indexed so that "which of them may
 * match this label set" does not scan them all. Each selector is filed
 * under one of its positive constraints (a matchLabels pair, the pairs of an
 * In, or an Exists key); selectors without one are always candidates.
 * candidates() over-approximates: check each with matches().
 */
export class SelectorIndex<T> {
  private readonly byPair = new Map<string, Map<string, Set<T>>>();
  private readonly byKey = new Map<string, Set<T>>();
  private readonly always = new Set<T>();

  private static anchor(sel: SelectorLike): { pairs: Array<[string, string]> } | { key: string } | undefined {
    for (const [k, v] of Object.entries(sel.matchLabels ?? {})) return { pairs: [[k, v]] };
    for (const r of sel.matchExpressions ?? []) if (r.operator === 'In') return { pairs: [...new Set(r.values ?? [])].map((v): [string, string] => [r.key, v]) };
    for (const r of sel.matchExpressions ?? []) if (r.operator === 'Exists') return { key: r.key };
    return undefined;
  }

  add(sel: SelectorLike, item: T): void {
    const a = SelectorIndex.anchor(sel);
    if (!a) this.always.add(item);
    else if ('key' in a) {
      let s = this.byKey.get(a.key);
      if (!s) this.byKey.set(a.key, (s = new Set()));
      s.add(item);
    } else
      for (const [k, v] of a.pairs) {
        let byV = this.byPair.get(k);
        if (!byV) this.byPair.set(k, (byV = new Map()));
        let s = byV.get(v);
        if (!s) byV.set(v, (s = new Set()));
        s.add(item);
      }
  }

  /** `sel` must be the selector `item` was added with. */
  delete(sel: SelectorLike, item: T): void {
    const a = SelectorIndex.anchor(sel);
    if (!a) this.always.delete(item);
    else if ('key' in a) {
      const s = this.byKey.get(a.key);
      s?.delete(item);
      if (s?.size === 0) this.byKey.delete(a.key);
    } else
      for (const [k, v] of a.pairs) {
        const byV = this.byPair.get(k);
        const s = byV?.get(v);
        s?.delete(item);
        if (s?.size === 0) byV!.delete(v);
        if (byV?.size === 0) this.byPair.delete(k);
      }
  }

  /** Every selector that may match `labels` (and possibly others). */
  candidates(labels: Labels): Set<T> {
    const out = new Set<T>(this.always);
    for (const k of Object.keys(labels)) {
      for (const x of this.byPair.get(k)?.get(labels[k]!) ?? []) out.add(x);
      for (const x of this.byKey.get(k) ?? []) out.add(x);
    }
    return out;
  }
}
