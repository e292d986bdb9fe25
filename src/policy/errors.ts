/**
 * Validation issues: one shape for every error any input can have (the
 * config file, policies documents, selectors, Compose files, Kubernetes
 * objects, input files), and one formatter that turns an issue into the
 * line users see. As with zod, an issue is a code, a path and a message,
 * plus where it came from (file, document, line, object). Every validator
 * collects all its issues rather than stopping at the first, and nothing is
 * applied when there is one.
 *
 *   config.yaml: policies[1] (web-to-api).ports[0]: "80/tcpx" is not a port: ...
 *   config.yaml: line 7: YAML syntax error: ...
 *   compose.yaml:6:9: services.web.depends_on[1]: service "nosuch" is not defined in services
 *   policies.yaml (document 3): NetworkPolicy x/allow: spec.egress[0].to[0].ipBlock.cidr: "10.0.0.0/33" is not a valid CIDR
 */

/** What kind of problem an issue is (its message says it to a person). */
export type IssueCode =
  /** the text does not parse (YAML, JSON) */
  | 'syntax'
  /** the file could not be read, or was refused (src/policy/input-file.ts) */
  | 'file'
  /** the document is not of the kind expected at all */
  | 'not-a-document'
  | 'required'
  | 'invalid-type'
  | 'unknown-field'
  /** a value of the right type that is not valid */
  | 'invalid-value'
  /** a field or value that is valid elsewhere, not here (mode in a policies document, a reserved label key) */
  | 'not-allowed'
  /** a name or value given twice */
  | 'duplicate'
  /** names something that is not there (a service, a container a selector should match) */
  | 'unresolved';

/**
 * A map key that Kubernetes prints in brackets (`metadata.labels[app]`,
 * field.Path.Key), where a field is printed after a dot.
 */
export interface MapKey {
  key: string;
}

/** A field (or map key), a map key printed as such, or a list index. */
export type PathSegment = string | number | MapKey;
export type Path = readonly PathSegment[];

/**
 * How a path is printed. `bastion` (Bastion's own documents, zod's rule): a
 * key that is not an identifier is quoted, `labels["bastion.io/name"]`.
 * `dotted` (Compose and Kubernetes, as their own tools print paths): every
 * field after a dot, `services.my.db.ports[0]`, and a MapKey in brackets.
 */
export type PathStyle = 'bastion' | 'dotted';

export interface Issue {
  code: IssueCode;
  /** the field, from the root of the document (or of `object` when it is the document) */
  path: Path;
  message: string;
  /** the file as the user named it ("config.yaml", "/etc/bastion/config.yaml") */
  file?: string;
  /** 1-based document of a multi-document file */
  document?: number;
  /** 0-based item of a List */
  item?: number;
  /** 1-based line of the field (or of the error, for one without a path), when known */
  line?: number;
  /** 1-based column: the position is then printed as an editor reads it, file:line:column */
  column?: number;
  /** the object the field belongs to */
  object?: IssueObject;
  pathStyle?: PathStyle;
}

export interface IssueObject {
  /** "web-to-api", "NetworkPolicy x/deny-all" */
  name: string;
  /**
   * how many segments of the path lead to the object: 0 when the path starts
   * at the object (named before the path), 2 for the item of a list
   * (named after its place: "policies[1] (web-to-api).ports[0]")
   */
  at: number;
}

/** The whole path, in `style`; with `object` named after its place when it sits inside the path. */
export function formatPath(path: Path, style: PathStyle = 'bastion', object?: IssueObject): string {
  let s = '';
  path.forEach((seg, i) => {
    if (typeof seg === 'number') s += `[${seg}]`;
    else if (typeof seg === 'object') s += style === 'dotted' ? `[${seg.key}]` : key(s, seg.key, style);
    else s += key(s, seg, style);
    if (object && object.at === i + 1) s += ` (${object.name})`;
  });
  return s;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_-]*$/;

function key(before: string, k: string, style: PathStyle): string {
  if (style === 'dotted' || IDENTIFIER.test(k)) return before === '' ? k : `.${k}`;
  return `[${JSON.stringify(k)}]`;
}

/** Where an issue's document came from: "config.yaml", "compose.yaml:6:9", "policies.yaml (document 2, items[3])". */
export function formatOrigin(o: Pick<Issue, 'file' | 'document' | 'item' | 'line' | 'column'>): string | undefined {
  let file = o.file;
  if (file !== undefined && o.line !== undefined && o.column !== undefined) file = `${file}:${o.line}:${o.column}`;
  const within: string[] = [];
  if (o.document !== undefined) within.push(`document ${o.document}`);
  if (o.item !== undefined) within.push(`items[${o.item}]`);
  if (within.length === 0) return file;
  return file === undefined ? within.join(', ') : `${file} (${within.join(', ')})`;
}

/**
 * One line per issue: origin, object, path, message, each followed by ": ".
 * A line without a column is printed only for an issue that has no path
 * (a syntax error): the path says more.
 */
export function formatIssue(i: Issue): string {
  const where: string[] = [];
  const origin = formatOrigin(i);
  if (origin !== undefined) where.push(origin);
  if (i.object !== undefined && i.object.at === 0) where.push(i.object.name);
  if (i.path.length > 0) where.push(formatPath(i.path, i.pathStyle, i.object?.at ? i.object : undefined));
  else if (i.line !== undefined && i.column === undefined) where.push(`line ${i.line}`);
  return where.length > 0 ? `${where.join(': ')}: ${i.message}` : i.message;
}

/** Issues as the lines a user reads: at most ERRORS_MAX of them, each at most MESSAGE_MAX characters. */
export function issueLines(issues: readonly Issue[]): string[] {
  return boundErrors(issues.map(formatIssue));
}

/** Thrown by validators that cannot return a result object; the message is one line per issue. */
export class InvalidInput extends Error {
  constructor(
    readonly issues: Issue[],
    message = issueLines(issues).join('\n'),
  ) {
    super(message);
    this.name = 'InvalidInput';
  }
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

// ------------------------------------------------ Bastion's wording of values

/** A mapping of a document (not a list, not null, not a Buffer of binary YAML). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

/** What a value of a document is, for "expected X, got ...": at most an excerpt of it. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (isPlainObject(v)) return 'a mapping';
  if (typeof v === 'string') return `the string ${quote(v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'boolean') return `the boolean ${v}`;
  return typeof v;
}

/** The unknown-field issues of `obj` at `path`: every key not in `known`, with a "did you mean". */
export function unknownFields(obj: Readonly<Record<string, unknown>>, known: readonly string[], path: Path = []): Issue[] {
  const out: Issue[] = [];
  for (const k of Object.keys(obj)) if (!known.includes(k)) out.push({ code: 'unknown-field', path, message: unknownFieldMessage(k, known) });
  return out;
}

export function unknownFieldMessage(key: string, known: readonly string[]): string {
  const hint = closest(key, known);
  return `unknown field ${quote(key)}${hint ? ` (did you mean ${quote(hint)}?)` : ''}`;
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
