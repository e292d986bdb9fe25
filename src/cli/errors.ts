/** An error meant for the user: printed without a stack, with an exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** Exit codes, shared by every command. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  /** invalid input: config, policy or object that does not validate */
  invalid: 3,
  /** the daemon is not running, or something it manages is not in place */
  notReady: 4,
} as const;
