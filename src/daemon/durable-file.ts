/**
 * Writing a small state file the daemon reads back at its next start
 * (runtime policies, modes set at run time).
 */
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

/** the write in flight (and those queued behind it), by file */
const inFlight = new Map<string, Promise<void>>();
let tmpSeq = 0;

/**
 * Write the file whole, durably, then put it in place: a temporary file
 * in the same directory (mode 0600; the directory 0700 if it is made),
 * fsync, rename over the old one, fsync the directory. A crash at any
 * point leaves the old file or the new one, never a mix or an empty file
 * (a plain write-and-rename can leave an empty file after a power loss:
 * the rename can reach the disk before the data).
 *
 * Asynchronous, off the event loop: an fsync on a disk takes milliseconds
 * (3 to 14 ms measured under load), and a synchronous one held every
 * request and flow event behind each `POST /v1/policies`. Writes of one
 * file run one after the other in the order asked, so the last asked is
 * the one on disk; the promise settles once this text is in place.
 */
export function writeFileDurably(file: string, text: string): Promise<void> {
  const previous = inFlight.get(file) ?? Promise.resolve();
  const mine = previous.catch(() => undefined).then(() => writeOnce(file, text));
  const tail = mine.catch(() => undefined);
  inFlight.set(file, tail);
  void tail.then(() => {
    if (inFlight.get(file) === tail) inFlight.delete(file);
  });
  return mine;
}

/** Settles when every write asked so far has finished (the daemon waits for it before it exits). */
export async function durableWritesDone(): Promise<void> {
  while (inFlight.size) await Promise.all([...inFlight.values()]);
}

async function writeOnce(file: string, text: string): Promise<void> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}-${++tmpSeq}`;
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
