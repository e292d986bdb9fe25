/**
 * Writing a small state file the daemon reads back at its next start
 * (runtime policies, modes set at run time).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Write the file whole, durably, then put it in place: a temporary file
 * in the same directory (mode 0600; the directory 0700 if it is made),
 * fsync, rename over the old one, fsync the directory. A crash at any
 * point leaves the old file or the new one, never a mix or an empty file
 * (a plain write-and-rename can leave an empty file after a power loss:
 * the rename can reach the disk before the data).
 */
export function writeFileDurably(file: string, text: string): void {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}
