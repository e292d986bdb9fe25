#!/usr/bin/env node
// Bundles the console's page (src/ui/web, with cytoscape, fCoSE and preact)
// into dist/ui/console.js and console.css: one file each, no CDN, so the
// console works on a host without Internet access. `bastion ui` serves them.
// Usage: node scripts/build-ui.mjs [--watch]
import { build, context } from 'esbuild';
import { mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'ui');
mkdirSync(outdir, { recursive: true });

const common = {
  absWorkingDir: root,
  bundle: true,
  minify: !process.env.BASTION_UI_DEBUG,
  sourcemap: 'linked',
  target: ['chrome110', 'firefox110', 'safari16'],
  logLevel: 'warning',
  legalComments: 'linked',
};
const scripts = { ...common, entryPoints: ['src/ui/web/main.tsx'], outfile: join(outdir, 'console.js'), format: 'esm', jsx: 'automatic', jsxImportSource: 'preact' };
const styles = { ...common, entryPoints: ['src/ui/web/console.css'], outfile: join(outdir, 'console.css'), sourcemap: false };

if (process.argv.includes('--watch')) {
  for (const o of [scripts, styles]) await (await context(o)).watch();
  console.log('build-ui: watching src/ui/web');
} else {
  await Promise.all([build(scripts), build(styles)]);
  const kb = (f) => `${Math.round(statSync(join(outdir, f)).size / 1024)} kB`;
  console.log(`build-ui: dist/ui/console.js ${kb('console.js')}, console.css ${kb('console.css')}`);
}
