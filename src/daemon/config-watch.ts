/**
 * Noticing that the config file changed. The directory is watched, not the
 * file: editors and `mv` replace the file, which would silently end a watch
 * on the file itself. Changes are debounced (an editor's save is several
 * events).
 */
import { watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

const DEBOUNCE_MS = 50;

/** Calls onChange after the file changes; returns the function that stops watching. */
export function watchConfigFile(path: string, onChange: () => void): () => void {
  const file = resolve(path);
  let timer: NodeJS.Timeout | undefined;
  const watcher = watch(dirname(file), (_ev, name) => {
    if (name && name.toString() !== basename(file)) return;
    clearTimeout(timer);
    timer = setTimeout(onChange, DEBOUNCE_MS);
  });
  return () => {
    clearTimeout(timer);
    watcher.close();
  };
}
