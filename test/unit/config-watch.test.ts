/**
 * The config watch applies only complete versions of the file: a writer
 * that truncates and writes in place with pauses is waited for until it
 * closes the file; a file renamed into place is applied at once; a last
 * line without its newline is not applied; a file is compared with what
 * the last reload read, not with what the watch last handed over. Real
 * files, real inotify.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SETTLE_MS, watchConfigFile } from '../../src/daemon/config-watch.js';

const dir = mkdtempSync(join(tmpdir(), 'bastion-watch-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

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

  it('a version written back after a reload read another one is reloaded (failed before: taken for the one already handed over, nothing reloaded it)', async () => {
    const [A0, A1, B] = ['a: 0\n', 'a: 1\n', 'b: 2\n'];
    const file = join(dir, 'race.yaml');
    writeFileSync(file, A0);
    let lastRead: string | undefined = sha256(A0); // start-up read A0
    const reads: string[] = [];
    const stop = watchConfigFile(file, {
      lastRead: () => lastRead,
      onComplete: () => {
        // a fake reloader: the first reload starts as B lands, reads B, and A1 is written back
        // before the watch looks again (all within one settle time)
        if (reads.length === 0) writeFileSync(file, B);
        const text = readFileSync(file, 'utf8');
        reads.push(text);
        lastRead = sha256(text);
        if (reads.length === 1) writeFileSync(file, A1);
      },
    });
    try {
      writeFileSync(file, A1);
      // two settle times at least; more on a busy machine, whose timers run late
      for (let waited = 0; reads.length < 2 && waited < 20 * SETTLE_MS; waited += 50) await sleep(50);
      assert.deepEqual(reads, [B, A1], 'A1 is reloaded again: the reload it was handed to read B');
      await sleep(SETTLE_MS * 2);
      assert.equal(reads.length, 2, 'and once only');
    } finally {
      stop();
    }
  });

  it('a file whose content is what the last reload read is not handed over, even one this watch never handed over (a SIGHUP read it): nor waited for', async () => {
    const file = join(dir, 'read.yaml');
    writeFileSync(file, 'a: 0\n');
    let lastRead: string | undefined = sha256('a: 0\n');
    let seen = 0;
    const pending: Array<string | undefined> = [];
    const stop = watchConfigFile(file, { lastRead: () => lastRead, onComplete: () => seen++, onPending: (why) => pending.push(why) });
    try {
      writeFileSync(file, 'a: 0\n');
      await sleep(SETTLE_MS * 3);
      assert.equal(seen, 0, 'rewritten the same');
      writeFileSync(file, 'a: 1');
      await sleep(SETTLE_MS * 3);
      assert.equal(seen, 0, 'no final newline: waits');
      assert.match(String(pending.at(-1)), /does not end with a newline/);
      lastRead = sha256('a: 1'); // SIGHUP: a reload read it as it is
      writeFileSync(file, 'a: 1');
      await sleep(SETTLE_MS * 3);
      assert.equal(seen, 0, 'what the reload read is not handed over again');
      assert.equal(pending.at(-1), undefined, 'nor waited for any more');
      writeFileSync(file, 'a: 0\n');
      await sleep(SETTLE_MS * 3);
      assert.equal(seen, 1, 'the first content, different from what was read last, is handed over');
    } finally {
      stop();
    }
  });

  it('while a reload is reading (lastRead undefined), the file is handed over even unchanged: the reload asked for reads it after', async () => {
    const file = join(dir, 'reading.yaml');
    writeFileSync(file, 'a: 0\n');
    let seen = 0;
    const stop = watchConfigFile(file, { lastRead: () => undefined, onComplete: () => seen++ });
    try {
      writeFileSync(file, 'a: 0\n');
      await sleep(SETTLE_MS * 3);
      assert.equal(seen, 1);
    } finally {
      stop();
    }
  });
});
