/**
 * Errors of the policy front ends: where (file, field path, object name, and
 * the line when known) and what. Every validator collects all of them rather
 * than stopping at the first, and nothing is applied when there is one.
 */

export interface ConfigError {
  /** the file as the user named it ("config.yaml", "/etc/bastion/config.yaml") */
  file: string;
  /** the field, from the document root: "policies[1].ports[0]"; "" for the whole document */
  path: string;
  /** name of the object the field belongs to ("web-to-api"), when it has one */
  object?: string;
  /** 1-based line in the file, when known */
  line?: number;
  message: string;
}

/**
 * One line per error:
 *   config.yaml: policies[1] (web-to-api).ports[0]: "80/tcpx" is not a port: ...
 *   config.yaml: containers[2] (db): unknown field "netnss"
 *   config.yaml: line 7: YAML syntax error: ...
 * The object name goes right after the first path segment (the list item it
 * names). A line number is printed only for errors that have no path.
 */
export function formatConfigError(e: ConfigError): string {
  const where: string[] = [e.file];
  if (e.path !== '') where.push(withObject(e.path, e.object));
  else if (e.line !== undefined) where.push(`line ${e.line}`);
  return `${where.join(': ')}: ${e.message}`;
}

function withObject(path: string, object: string | undefined): string {
  if (object === undefined) return path;
  const m = /^[^.[]*(\[\d+\])?/.exec(path)!;
  const head = m[0];
  return `${head} (${object})${path.slice(head.length)}`;
}

/**
 * The longest piece of the input an error quotes. A file that is not what
 * it was said to be (a config path that leads to /etc/shadow) must not be
 * echoed into the log, stderr or an API answer: an error shows at most a
 * short excerpt of the offending value, enough to find it in the file.
 */
export const EXCERPT_MAX = 32;

/** A value of the input, quoted for an error: at most EXCERPT_MAX characters, on one line. */
export function quote(v: unknown): string {
  const s = typeof v === 'string' ? v : String(v);
  const cut = [...s].length > EXCERPT_MAX ? `${[...s].slice(0, EXCERPT_MAX - 1).join('')}…` : s;
  return JSON.stringify(cut);
}

/** The longest error message reported, whatever it quotes. */
export const MESSAGE_MAX = 300;

/** Errors reported at most for one input; the rest are counted. */
export const ERRORS_MAX = 20;

/** At most ERRORS_MAX errors, each at most MESSAGE_MAX characters, and a last line counting the others. */
export function boundErrors(lines: readonly string[]): string[] {
  const out = lines.slice(0, ERRORS_MAX).map((l) => ([...l].length > MESSAGE_MAX ? `${[...l].slice(0, MESSAGE_MAX - 1).join('')}…` : l));
  if (lines.length > ERRORS_MAX) out.push(`... and ${lines.length - ERRORS_MAX} more error${lines.length - ERRORS_MAX === 1 ? '' : 's'}`);
  return out;
}

/**
 * The first line of a YAML parser's error, without its position: the yaml
 * library appends the offending line of the input (prettyErrors), which is
 * the input's content.
 */
export function yamlErrorLine(message: string): string {
  return message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
}

/** Thrown by the functions that cannot return a result object. */
export class ConfigErrors extends Error {
  constructor(readonly errors: ConfigError[]) {
    super(errors.map(formatConfigError).join('\n'));
    this.name = 'ConfigErrors';
  }
}

/** "did you mean" helper: the closest candidate within edit distance 2, if any. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}
