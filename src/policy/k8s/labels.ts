/**
 * Kubernetes label selectors: matching (metav1.LabelSelector semantics) and the
 * syntax checks the API server applies to label keys, values, names and
 * selectors. Pure functions, no I/O.
 */
import type { V1LabelSelector, V1LabelSelectorRequirement } from '@kubernetes/client-node';
import { quote } from '../errors.js';

export type Labels = Readonly<Record<string, string>>;

/**
 * Does `labels` satisfy `selector`? An empty selector ({}) matches everything.
 * matchLabels and every matchExpressions requirement must all hold (AND).
 * Operators: In (key present, value listed), NotIn (key absent or value not
 * listed), Exists, DoesNotExist. The selector is assumed valid.
 */
export function selectorMatches(selector: V1LabelSelector, labels: Labels): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (!Object.hasOwn(labels, k) || labels[k] !== v) return false;
  }
  for (const req of selector.matchExpressions ?? []) {
    if (!requirementMatches(req, labels)) return false;
  }
  return true;
}

export function requirementMatches(req: V1LabelSelectorRequirement, labels: Labels): boolean {
  const has = Object.hasOwn(labels, req.key);
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return has && values.includes(labels[req.key]!);
    case 'NotIn':
      return !has || !values.includes(labels[req.key]!);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    default:
      // validation rejects unknown operators; never match on one
      return false;
  }
}

/** A short human form: "{}" (everything), "pod=a,ns in (x,y),!foo". */
export function formatSelector(selector: V1LabelSelector | undefined): string {
  if (selector === undefined) return '<none>';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) parts.push(`${k}=${v}`);
  for (const r of selector.matchExpressions ?? []) {
    const vals = (r.values ?? []).join(',');
    if (r.operator === 'In') parts.push(`${r.key} in (${vals})`);
    else if (r.operator === 'NotIn') parts.push(`${r.key} notin (${vals})`);
    else if (r.operator === 'Exists') parts.push(r.key);
    else if (r.operator === 'DoesNotExist') parts.push(`!${r.key}`);
    else parts.push(`${r.key} ${r.operator} (${vals})`);
  }
  return parts.length === 0 ? '{}' : parts.join(',');
}

// ---- syntax, as k8s.io/apimachinery validates it -------------------------

const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** undefined when valid, else why not. */
export function checkDns1123Label(v: string): string | undefined {
  if (v.length > 63) return `must be no more than 63 characters (is ${v.length})`;
  if (!DNS1123_LABEL.test(v))
    return "must be a lowercase RFC 1123 label: lowercase alphanumerics or '-', starting and ending with an alphanumeric";
  return undefined;
}

export function checkDns1123Subdomain(v: string): string | undefined {
  if (v.length > 253) return `must be no more than 253 characters (is ${v.length})`;
  if (!DNS1123_SUBDOMAIN.test(v))
    return "must be a lowercase RFC 1123 subdomain: lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric";
  return undefined;
}

/** A label key: [prefix/]name, prefix a DNS subdomain, name a qualified name. */
export function checkLabelKey(key: string): string | undefined {
  const parts = key.split('/');
  let name: string;
  if (parts.length === 1) name = parts[0]!;
  else if (parts.length === 2) {
    const prefix = parts[0]!;
    name = parts[1]!;
    if (prefix.length === 0) return 'prefix part must be non-empty';
    const p = checkDns1123Subdomain(prefix);
    if (p) return `prefix part ${p}`;
  } else {
    return "a qualified name must consist of an optional DNS subdomain prefix and a name, separated by at most one '/'";
  }
  if (name.length === 0) return 'name part must be non-empty';
  if (name.length > 63) return `name part must be no more than 63 characters (is ${name.length})`;
  if (!QUALIFIED_NAME.test(name))
    return "name part must consist of alphanumerics, '-', '_' or '.', and must start and end with an alphanumeric";
  return undefined;
}

export function checkLabelValue(v: string): string | undefined {
  if (v.length > 63) return `must be no more than 63 characters (is ${v.length})`;
  if (v.length > 0 && !QUALIFIED_NAME.test(v))
    return "a label value must be empty or consist of alphanumerics, '-', '_' or '.', and must start and end with an alphanumeric";
  return undefined;
}

/**
 * A port name (IANA_SVC_NAME): at most 15 characters, lowercase alphanumerics
 * and '-', at least one letter, no leading, trailing or doubled '-'.
 */
export function checkPortName(v: string): string | undefined {
  if (v.length === 0) return 'must be non-empty';
  if (v.length > 15) return `must be no more than 15 characters (is ${v.length}: ${quote(v)})`;
  if (!/^[-a-z0-9]+$/.test(v)) return `must contain only lowercase alphanumerics and '-' (${quote(v)})`;
  if (!/[a-z]/.test(v)) return `must contain at least one letter (${quote(v)})`;
  if (v.includes('--')) return `must not contain consecutive hyphens (${quote(v)})`;
  if (v.startsWith('-') || v.endsWith('-')) return `must not begin or end with a hyphen (${quote(v)})`;
  return undefined;
}

export interface FieldIssue {
  field: string;
  message: string;
}

export function validateLabels(labels: Record<string, string> | undefined, field: string): FieldIssue[] {
  const out: FieldIssue[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) {
    const ek = checkLabelKey(k);
    if (ek) out.push({ field, message: `invalid label key ${quote(k)}: ${ek}` });
    const ev = checkLabelValue(v);
    if (ev) out.push({ field: `${field}[${k}]`, message: `invalid label value ${quote(v)}: ${ev}` });
  }
  return out;
}

export function validateSelector(sel: V1LabelSelector, field: string): FieldIssue[] {
  const out = validateLabels(sel.matchLabels, `${field}.matchLabels`);
  (sel.matchExpressions ?? []).forEach((r, i) => {
    const f = `${field}.matchExpressions[${i}]`;
    const ek = checkLabelKey(r.key);
    if (ek) out.push({ field: `${f}.key`, message: `invalid label key ${quote(r.key)}: ${ek}` });
    const values = r.values ?? [];
    switch (r.operator) {
      case 'In':
      case 'NotIn':
        if (values.length === 0)
          out.push({ field: `${f}.values`, message: `must be specified when operator is ${r.operator}` });
        values.forEach((v, j) => {
          const ev = checkLabelValue(v);
          if (ev) out.push({ field: `${f}.values[${j}]`, message: `invalid label value ${quote(v)}: ${ev}` });
        });
        break;
      case 'Exists':
      case 'DoesNotExist':
        if (values.length > 0)
          out.push({ field: `${f}.values`, message: `may not be specified when operator is ${r.operator}` });
        break;
      default:
        out.push({
          field: `${f}.operator`,
          message: `${quote(r.operator)} is not a valid selector operator (In, NotIn, Exists, DoesNotExist)`,
        });
    }
  });
  return out;
}
