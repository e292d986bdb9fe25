/**
 * A candidate policy set for a replay or a diff, as text: a `policies:`
 * document (what `bastion learn` writes, what `bastion policy add -f` takes)
 * or a whole config file (its policies; its containers and mode are not
 * used). Validated by the config parser, so its errors name the file, the
 * policy and the field exactly as `policy add` would.
 */
import { readFile } from 'node:fs/promises';
import type { Rule } from '../policy/model.js';
import { parseConfigText, policyToRules, type PolicyConfig } from '../policy/bastion-config.js';
import { formatIssue } from '../policy/errors.js';

export type Candidate = { ok: true; policies: PolicyConfig[]; rules: Rule[] } | { ok: false; errors: string[] };

export function parseCandidate(text: string, source: string): Candidate {
  const r = parseConfigText(text, source);
  if (!r.ok) return { ok: false, errors: r.errors.map(formatIssue) };
  return { ok: true, policies: r.config.policies, rules: r.config.policies.flatMap(policyToRules) };
}

export async function loadCandidate(path: string): Promise<Candidate> {
  const name = path === '-' ? 'stdin' : path;
  let text: string;
  try {
    text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (err) {
    return { ok: false, errors: [`${name}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`] };
  }
  return parseCandidate(text, name);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
