/**
 * The syntax checks the API server applies to Kubernetes names: namespace
 * and object names (RFC 1123 labels and subdomains) and port names. Label
 * keys, values and selectors are src/policy/selector.ts's, in the API
 * server's words (K8S_LABEL_MESSAGES). Pure functions, no I/O.
 */
import { quote } from '../errors.js';
import { isDns1123Subdomain } from '../selector.js';

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
