/**
 * Kubernetes label selectors: matching (metav1.LabelSelector semantics) and the
 * syntax checks the API server applies to label keys, values, names and
 * selectors. Pure functions, no I/O.
 */
import type { V1LabelSelector, V1LabelSelectorRequirement } from '@kubernetes/client-node';
import { quote } from '../errors.js';
import { isDns1123Subdomain } from '../selector.js';

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

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** undefined when valid, else why not. */
export function checkDns1123Label(v: string): string | undefined {
  if (v.length > 63) return `must be no more than 63 characters (is ${v.length})`;
  if (!DNS1123_LABEL.test(v))
    return "must be a lowercase RFC 1123 label: lowercase alphanumerics or '-', starting and ending with an alphanumeric";
  return undefined;
}

export function checkDns1123Subdomain(v: string): string | undefined {
  if (v.length > 253) return `must be no more than 253 characters (is ${v.length})`;
  if (!isDns1123Subdomain(v))
    return "must be a lowercase RFC 1123 subdomain: lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric";
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
