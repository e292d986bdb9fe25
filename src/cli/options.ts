/**
 * Options shared by the commands, declared once so that every command
 * parses, checks and documents them the same way. A value that does not
 * parse is a usage error (exit 2) raised by commander before the command
 * runs: never an empty answer, never a request to the daemon.
 */
import { InvalidArgumentError, Option } from 'commander';
import { DEFAULT_PIN_PATH } from '../datapath/layout.js';

/** The environment variable that names the instance, so --pin-path need not be repeated. */
export const PIN_PATH_ENV = 'BASTION_PIN_PATH';

/** The pin path a command uses when --pin-path is not given: $BASTION_PIN_PATH, else /sys/fs/bpf/bastion. */
export function defaultPinPath(env: NodeJS.ProcessEnv = process.env): string {
  return env[PIN_PATH_ENV] || DEFAULT_PIN_PATH;
}

/** --pin-path, defaulting to $BASTION_PIN_PATH (an empty variable counts as unset). */
export function pinPathOption(description = 'bpffs directory of the instance'): Option {
  const env = process.env[PIN_PATH_ENV];
  return new Option('--pin-path <dir>', description).default(
    defaultPinPath(),
    env ? `${env}, from $${PIN_PATH_ENV}` : `$${PIN_PATH_ENV} if set, else ${DEFAULT_PIN_PATH}`,
  );
}

/** -o/--output with the formats a command offers; anything else is a usage error. */
export function outputOption(formats: readonly string[], fallback = formats[0]!): Option {
  return new Option('-o, --output <format>', 'output format').choices(formats).default(fallback);
}

/** --json, the short form of -o json. */
export function jsonOption(): Option {
  return new Option('--json', 'same as -o json');
}

/** A whole number in [min, max], for commander's argParser. */
export function integerArg(min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v: string) => {
    if (!/^[0-9]+$/.test(v.trim())) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return n;
  };
}

/** One of `values`, case-insensitive, returned as listed. */
export function oneOfArg(values: readonly string[]): (v: string) => string {
  return (v: string) => {
    const hit = values.find((x) => x.toLowerCase() === v.trim().toLowerCase());
    if (!hit) throw new InvalidArgumentError(`not one of ${values.join(', ')}`);
    return hit;
  };
}

/**
 * A size such as 64M, 512k, 1G or a number of bytes, for commander's
 * argParser. Binary units (1M = 1,048,576 bytes).
 */
export function sizeArg(v: string): number {
  const m = /^\s*([0-9]+)\s*([kKmMgG]?)[iI]?[bB]?\s*$/.exec(v);
  if (!m) throw new InvalidArgumentError('expected a size such as 64M, 512K or a number of bytes');
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  const n = Number(m[1]) * unit;
  if (n <= 0) throw new InvalidArgumentError('expected a size greater than 0');
  return n;
}

/** --published-ports: what a published Docker/Compose port lets in (see PublishedPortsMode). */
export function publishedPortsOption(): Option {
  return new Option(
    '--published-ports <mode>',
    'what a published port lets in: allow (from the host, and from outside unless bound to loopback), host-only, or deny',
  )
    .choices(['allow', 'host-only', 'deny'])
    .default('allow');
}
