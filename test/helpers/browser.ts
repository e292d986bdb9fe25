/**
 * A real browser for the console's tests: Debian's chromium, driven by
 * playwright-core (nothing is downloaded), headless, in a fresh profile that
 * is removed afterwards. And `bastion ui` as a process, with the URL and
 * token it prints. Screenshots go to test-artifacts/console/ (gitignored).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { BASTION_BIN, REPO_ROOT } from './bastion-daemon.js';
import { startBackground, type Background } from './probes.js';

export const CHROMIUM = '/usr/bin/chromium';
export const ARTIFACTS = join(REPO_ROOT, 'test-artifacts', 'console');

export interface Browser {
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

/** Launches chromium headless in a fresh --user-data-dir; `extraArgs` e.g. --host-resolver-rules. */
export async function launchBrowser(o: { extraArgs?: string[]; width?: number; height?: number } = {}): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/setup installs Debian's chromium`);
  const profile = mkdtempSync(join(tmpdir(), 'bastion-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: o.width ?? 1600, height: o.height ?? 1000 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...(o.extraArgs ?? []),
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    close: async () => {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a screenshot as test-artifacts/console/NAME.png and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

export interface ConsoleProcess {
  bg: Background;
  /** http://127.0.0.1:PORT/ */
  url: string;
  /** the URL with ?token= (what the user opens) */
  openUrl: string;
  token: string;
  port: number;
  stop(): Promise<void>;
}

/** Runs `bastion ui --listen 127.0.0.1:0 --pin-path PIN` and waits for the URL it prints. */
export async function startConsoleProcess(pinPath: string, timeoutMs = 20_000): Promise<ConsoleProcess> {
  const bg = startBackground(null, BASTION_BIN, ['ui', '--listen', '127.0.0.1:0', '--pin-path', pinPath]);
  let out = '';
  const m = await new Promise<RegExpExecArray>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`bastion ui printed no URL in ${timeoutMs} ms: ${out} ${bg.stderr}`)), timeoutMs);
    bg.child.stdout!.on('data', (d: Buffer | string) => {
      out += String(d);
      const r = /(http:\/\/127\.0\.0\.1:(\d+)\/)\?token=([A-Za-z0-9_-]+)/.exec(out);
      if (r) {
        clearTimeout(t);
        resolve(r);
      }
    });
    void bg.exited.then(() => {
      clearTimeout(t);
      reject(new Error(`bastion ui exited: ${out} ${bg.stderr}`));
    });
  });
  return { bg, url: m[1]!, openUrl: m[0], token: m[3]!, port: Number(m[2]), stop: () => bg.stop('SIGTERM') };
}
