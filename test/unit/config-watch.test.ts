/**
 * The config watch applies only complete versions of the file: a writer
 * that truncates and writes in place with pauses is waited for until it
 * closes the file; a file renamed into place is applied at once; a last
 * line without its newline is not applied. Real files, real inotify.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SETTLE_MS, watchConfigFile } from '../../src/daemon/config-watch.js';

const dir = mkdtempSync(join(tmpdir(), 'bastion-watch-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function watched(name: string, initial: string) {
  const file = join(dir, name);
  writeFileSync(file, initial);
  const seen: number[] = [];
  const t0 = Date.now();
  const stop = watchConfigFile(file, { onComplete: () => seen.push(Date.now() - t0) });
  return { file, seen, stop, t0 };
}

describe('config watch', () => {
  it('an in-place write with pauses longer than the settle time is applied once, after the writer closes the file (failed before: applied at each pause)', async () => {
    const w = watched('inplace.yaml', 'a: 1\n');
    try {
      const fd = openSync(w.file, 'w'); // truncates
      for (const chunk of ['containers:\n', '  - { name: x,', ' netns: x }\n', 'policies: []\n']) {
        writeSync(fd, chunk);
        await sleep(SETTLE_MS * 2);
      }
      assert.deepEqual(w.seen, [], 'nothing applied while the writer has the file open');
      closeSync(fd);
      await sleep(SETTLE_MS * 3);
      assert.equal(w.seen.length, 1, `applied ${w.seen.length} times`);
    } finally {
      w.stop();
    }
  });

  it('a file renamed into place is applied at once', async () => {
    const w = watched('renamed.yaml', 'a: 1\n');
    try {
      const tmp = join(dir, 'renamed.yaml.tmp');
      writeFileSync(tmp, 'a: 2\n');
      const t = Date.now();
      renameSync(tmp, w.file);
      await sleep(SETTLE_MS * 2);
      assert.equal(w.seen.length, 1);
      const after = w.seen[0]! - (t - w.t0);
      assert.ok(after < SETTLE_MS, `applied ${after} ms after the rename`);
    } finally {
      w.stop();
    }
  });

  it('a closed file whose last line has no newline waits for the rest; then it is applied', async () => {
    const w = watched('partial.yaml', 'a: 1\n');
    try {
      writeFileSync(w.file, 'policies:\n  - name: p\n    from: host\n    to: { app: a }\n    ports: ["80/t');
      await sleep(SETTLE_MS * 3);
      assert.deepEqual(w.seen, [], 'a last line without a newline is not whole');
      writeFileSync(w.file, 'policies:\n  - name: p\n    from: host\n    to: { app: a }\n    ports: ["80/tcp"]\n');
      await sleep(SETTLE_MS * 3);
      assert.equal(w.seen.length, 1);
    } finally {
      w.stop();
    }
  });

  it('a script writing in several opens and closes in quick succession is applied once, at the end', async () => {
    const w = watched('script.yaml', 'a: 1\n');
    try {
      writeFileSync(w.file, 'containers: []\n');
      writeFileSync(w.file, 'containers: []\npolicies: []\n', { flag: 'w' });
      writeFileSync(w.file, 'mode: audit\n', { flag: 'a' });
      await sleep(SETTLE_MS * 3);
      assert.equal(w.seen.length, 1);
    } finally {
      w.stop();
    }
  });

  it('an unchanged file (touched, rewritten with the same content) is not applied again', async () => {
    const w = watched('same.yaml', 'a: 1\n');
    try {
      writeFileSync(w.file, 'a: 1\n');
      await sleep(SETTLE_MS * 3);
      assert.deepEqual(w.seen, []);
    } finally {
      w.stop();
    }
  });
});
