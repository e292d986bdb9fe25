/**
 * The web console in a real browser (Debian's chromium through
 * playwright-core) against a real daemon protecting namespace containers
 * (web, api, db, attacker on one bridge; web→api 8080/tcp, api→db 5432/tcp)
 * with real traffic, through `bastion ui` as a user runs it:
 *
 * - the map shows the containers in their network and the policy edges with
 *   their ports; allowed traffic marks its edge used;
 * - a denied connection is a drop on the attacker→db edge within a second;
 * - the container panel, and the flow table (filters, pause);
 * - the token is required, a foreign Host (DNS rebinding) and a foreign page
 *   (a cross-origin text/plain POST with the session cookie) are refused;
 * - audit ↔ enforce, and learn → verify → apply, checked with real
 *   connections afterwards.
 *
 * Screenshots of each step: test-artifacts/console/*.png.
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Page } from 'playwright-core';
import { CoreLab, bastion } from '../helpers/bastion-daemon.js';
import { connectAll, expectAllConnect, expectNoneConnect, sleep, startTcpEcho, tcpConnect, tcpConnectQuick, waitFor } from '../helpers/probes.js';
import { launchBrowser, screenshot, startConsoleProcess, type Browser, type ConsoleProcess } from '../helpers/browser.js';
import { apiCall } from '../../src/api/client.js';
import { socketPathFor } from '../../src/api/paths.js';
import type { ErrorBody, PolicyRow } from '../../src/api/types.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- the page's handle is read inside the browser */

const REBIND_HOST = 'evil.test';

interface EdgeView {
  id: string;
  classes: string[];
  label: string;
  ports: string;
  count: number;
}

function edges(page: Page): Promise<EdgeView[]> {
  return page.evaluate(() =>
    (window as any).__bastion.view.cy.edges().map((e: any) => ({ id: e.id(), classes: e.classes(), label: e.data('label'), ports: e.data('ports'), count: e.data('count') })),
  );
}

function nodeView(page: Page, id: string): Promise<{ parent?: string; classes: string[] } | undefined> {
  return page.evaluate((id) => {
    const n = (window as any).__bastion.view.cy.getElementById(id);
    return n.empty() ? undefined : { parent: n.data('parent'), classes: n.classes() };
  }, id);
}

/** A real click (or shift-click) on a node where the map draws it. */
async function clickNode(page: Page, id: string, shift = false): Promise<void> {
  const at = await page.evaluate((id) => {
    const v = (window as any).__bastion.view;
    const p = v.cy.getElementById(id).renderedPosition();
    const r = v.el.getBoundingClientRect();
    return { x: r.left + p.x, y: r.top + p.y };
  }, id);
  if (shift) await page.keyboard.down('Shift');
  await page.mouse.click(at.x, at.y);
  if (shift) await page.keyboard.up('Shift');
}

describe('console: bastion ui in a real browser, against a real daemon', { timeout: 240_000 }, () => {
  let lab: CoreLab;
  let ui: ConsoleProcess;
  let browser: Browser;
  let page: Page;
  let socket: string;
  let learningApi = false;

  before(async () => {
    lab = await CoreLab.create();
    await Promise.all([
      startTcpEcho(lab.api.netns, lab.api.ip, 8080),
      startTcpEcho(lab.api.netns, lab.api.ip, 9090),
      startTcpEcho(lab.db.netns, lab.db.ip, 5432),
    ]);
    await lab.startDaemon();
    await lab.pinNeighbours(); // a refused connection is then the policy's doing, not ARP's
    socket = socketPathFor(lab.pinPath);
    ui = await startConsoleProcess(lab.pinPath);
    browser = await launchBrowser({ extraArgs: [`--host-resolver-rules=MAP ${REBIND_HOST} 127.0.0.1`] });
    page = browser.page;
    learningApi = (await apiCall(socket, 'GET', '/v1/modes')).status === 200;
  });

  after(async () => {
    await browser?.close();
    await ui?.stop();
    await lab?.cleanup();
  });

  it('bastion ui: --help, a wildcard address is a usage error (2), no daemon is exit 4', async () => {
    const help = await bastion(['ui', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--listen <host:port>/);
    assert.match(help.stdout, /-L 9474:127\.0\.0\.1:9474/);
    const wild = await bastion(['ui', '--listen', '0.0.0.0:9474', '--pin-path', lab.pinPath]);
    assert.equal(wild.code, 2, wild.stderr);
    assert.match(wild.stderr, /wildcard/);
    const none = await bastion(['ui', '--listen', '127.0.0.1:0', '--pin-path', `${lab.pinPath}-none`]);
    assert.equal(none.code, 4, none.stderr);
    assert.match(none.stderr, /no daemon is listening/);
  });

  it('without the token the console answers nothing (401), with the printed URL it opens', async () => {
    lab.requireDaemon();
    const bare = await page.goto(ui.url);
    assert.equal(bare!.status(), 401);
    assert.match(await page.content(), /access token is missing/);
    await screenshot(page, '00-no-token');
    const open = await page.goto(ui.openUrl);
    assert.equal(open!.status(), 200);
    assert.equal(new URL(page.url()).search, '', 'the token left the address bar');
    await page.waitForSelector('#map[data-ready="1"]', { timeout: 20_000 });
  });

  it('the map: the containers in their network, the policy graph with ports, nothing else', async () => {
    await page.waitForFunction(() => (window as any).__bastion.view.cy.nodes('.endpoint').length >= 4, undefined, { timeout: 10_000 });
    const bridge = lab.topo.bridge;
    for (const name of ['web', 'api', 'db', 'attacker']) {
      const n = await nodeView(page, `e:${name}`);
      assert.ok(n, `node ${name}`);
      assert.equal(n.parent, `n:${bridge}`, `${name} is drawn inside its network (bridge ${bridge})`);
    }
    const policy = (await edges(page)).filter((e) => e.classes.includes('policy'));
    assert.deepEqual(
      policy.map((e) => [e.id, e.label]).sort(),
      [
        ['p:e:api>e:db', '5432/tcp'],
        ['p:e:web>e:api', '8080/tcp'],
      ],
    );
    await screenshot(page, '01-map');
  });

  it('allowed traffic marks its edge used; the edge without traffic stays unused', async () => {
    expectAllConnect(await connectAll([['web→api:8080', lab.web.netns, lab.api.ip, 8080]]));
    await page.waitForFunction(() => (window as any).__bastion.view.cy.getElementById('p:e:web>e:api').hasClass('used'), undefined, { timeout: 5000 });
    const byId = new Map((await edges(page)).map((e) => [e.id, e]));
    assert.ok(byId.get('p:e:web>e:api')!.count >= 1);
    assert.ok(byId.get('p:e:api>e:db')!.classes.includes('unused'), 'api→db carried nothing yet');
    await screenshot(page, '02-traffic');
  });

  it('a denied connection appears as a drop on the attacker→db edge within a second', async (t) => {
    const t0 = Date.now();
    const attempt = tcpConnectQuick(lab.attacker.netns, lab.db.ip, 5432, 500);
    await page.waitForFunction(
      () => {
        const e = (window as any).__bastion.view.cy.getElementById('drop:e:attacker>e:db');
        return e.nonempty() && String(e.data('ports')).includes('5432/tcp');
      },
      undefined,
      { timeout: 5000, polling: 'raf' },
    );
    const ms = Date.now() - t0;
    const r = await attempt;
    assert.ok(!r.ok, `attacker→db:5432 must be refused: ${r.detail}`);
    assert.ok(ms < 1000, `the drop reached the map in ${ms} ms (at most 1,000)`);
    console.log(`# drop on the map ${ms} ms after the connection attempt started`);
    assert.ok((await nodeView(page, 'e:db'))!.classes.includes('attacked'));
    assert.ok((await nodeView(page, 'e:attacker'))!.classes.includes('attacker'));
    // the attack on db is not drawn on web (its neighbour on the map)
    const intoWeb = await page.evaluate(() => (window as any).__bastion.view.cy.edges('[target = "e:web"]').map((e: any) => ({ id: e.id(), ...e.data() })));
    assert.ok(!intoWeb.some((e: { id: string }) => e.id.startsWith('drop:e:attacker>')), `the attacker's drop is drawn on web: ${JSON.stringify(intoWeb)}`);
    if ((await nodeView(page, 'e:web'))!.classes.includes('attacked')) {
      // seen once in CI (1 December): some other drop toward web in this window; say what it was
      const flows = (await apiCall<any>(socket, 'GET', '/v1/flows?verdict=DROPPED&container=web&last=20')).body;
      t.diagnostic(`web is drawn as attacked by something else: ${JSON.stringify(intoWeb)} ${JSON.stringify(flows)}`);
    }
    await sleep(300);
    await screenshot(page, '03-drop');
  });

  it('the container panel: identity, labels, addresses, stack, rules both ways, who dropped on it, recent flows', async () => {
    await clickNode(page, 'e:db');
    const panel = page.locator('[data-testid="container-panel"][data-name="db"]');
    await panel.waitFor({ timeout: 5000 });
    const text = await panel.innerText();
    const st = (await apiCall<any>(socket, 'GET', '/v1/status')).body;
    const db = st.endpoints.find((e: any) => e.name === 'db');
    for (const want of [String(db.identity), 'app=db', lab.db.ip, lab.db.mac, 'stack in place', 'enforce', 'api-to-db', '5432/tcp', 'from attacker']) {
      assert.ok(text.includes(want), `the panel shows "${want}":\n${text}`);
    }
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="container-panel"] table.mini tr.v-DROPPED').length > 0, undefined, { timeout: 5000 });
    await screenshot(page, '04-panel');
  });

  it('the flow table: filters as bastion flows, live, pausable', async () => {
    const table = page.locator('[data-testid="flow-table"]');
    await table.locator('input[name="container"]').fill('db');
    await table.locator('input[name="verdict"]').fill('DROPPED');
    await table.locator('button[type="submit"]').click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="flow-table"] tbody tr.v-DROPPED').length > 0, undefined, { timeout: 5000 });
    const rows = () => page.locator('[data-testid="flow-table"] tbody tr').allInnerTexts();
    // cell by cell: a row's innerText has no tabs between cells when the row is not laid out ("attacker:44334db:5432...")
    const cells = await page.$$eval('[data-testid="flow-table"] tbody tr', (trs) => trs.map((tr) => [...(tr as HTMLTableRowElement).cells].map((c) => (c.textContent ?? '').trim())));
    assert.ok(cells.length > 0);
    for (const r of cells) {
      assert.ok(r.includes('DROPPED'), r.join(' | '));
      assert.ok(r.some((c) => /^db(:\d+)?$/.test(c)), r.join(' | '));
    }
    const before = (await rows()).length;
    await table.locator('button[name="pause"]').click();
    await tcpConnectQuick(lab.attacker.netns, lab.db.ip, 5432, 300);
    await page.waitForFunction(() => /Resume \(\d+ new\)/.test(document.querySelector('[data-testid="flow-table"] button[name="pause"]')?.textContent ?? ''), undefined, { timeout: 5000 });
    assert.equal((await rows()).length, before, 'a paused table does not move');
    await screenshot(page, '05-flow-table-paused');
    await table.locator('button[name="pause"]').click();
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="flow-table"] tbody tr').length > n, before, { timeout: 5000 });
    await table.locator('button', { hasText: 'Clear' }).click();
  });

  it('no other web page can drive it: a cross-origin POST with the session cookie, and a rebinding host name, are refused', async () => {
    // a page on another origin of this machine: same site as the console, so SameSite cookies go with its requests
    const evilDoc = 'policies:\n  - { name: evil-open-all, from: {}, to: {} }\n';
    const foreign: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><title>foreign</title><script>
        window.done = fetch(${JSON.stringify(`${ui.url}v1/policies`)}, { method: 'POST', mode: 'no-cors', credentials: 'include',
          headers: { 'content-type': 'text/plain' }, body: ${JSON.stringify(evilDoc)} }).then(() => 'sent', (e) => 'error ' + e);
      </script>
      <form id="f" method="POST" enctype="text/plain" action=${JSON.stringify(`${ui.url}v1/policies`)}><input name="policies" value="x"></form>`);
    });
    await new Promise<void>((r) => foreign.listen(0, '127.0.0.1', r));
    try {
      const fport = (foreign.address() as AddressInfo).port;
      const attacker = await browser.context.newPage();
      await attacker.goto(`http://127.0.0.1:${fport}/`);
      await attacker.evaluate(() => (window as any).done);
      const [nav] = await Promise.all([attacker.waitForNavigation(), attacker.evaluate(() => (document.getElementById('f') as HTMLFormElement).submit())]);
      assert.equal(nav!.status(), 403, 'a cross-origin form POST is refused');
      assert.match(await attacker.content(), /forbidden/);
      // DNS rebinding: a name the attacker controls, pointed at 127.0.0.1, with the token even
      const rebound = await attacker.goto(`http://${REBIND_HOST}:${ui.port}/?token=${ui.token}`);
      assert.equal(rebound!.status(), 403);
      await screenshot(attacker, '06-foreign-refused');
      await attacker.close();
    } finally {
      foreign.close();
    }
    const list = (await apiCall<PolicyRow[]>(socket, 'GET', '/v1/policies')).body as PolicyRow[];
    assert.ok(!list.some((p) => p.name.startsWith('evil')), `no foreign policy was added: ${JSON.stringify(list.map((p) => p.name))}`);
    // and a script with the token as a header is let in (the documented way)
    const r = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: ui.port, path: '/v1/status', headers: { authorization: `Bearer ${ui.token}` } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(r, 200);
    expectNoneConnect(await connectAll([['attacker→db:5432', lab.attacker.netns, lab.db.ip, 5432]]));
  });

  it('audit ↔ enforce from the container panel, checked with real connections', async (t: TestContext) => {
    if (!learningApi) return t.skip('the daemon has no /v1/modes yet (the learning API of issue 14 is not on this branch)');
    expectNoneConnect(await connectAll([['web→db:5432 (enforce)', lab.web.netns, lab.db.ip, 5432]]));
    // Audit mode opens a container's own policy only (docs/learning.md): web's
    // egress and db's ingress both refuse web→db, so both are switched, each
    // from its own panel. With web alone in audit, db's ingress still drops it.
    for (const name of ['web', 'db']) {
      await clickNode(page, `e:${name}`);
      const panel = page.locator(`[data-testid="container-panel"][data-name="${name}"]`);
      await panel.waitFor();
      await panel.locator('button[name="mode"]').click();
      await panel.locator('[data-testid="mode"]', { hasText: 'audit' }).waitFor({ timeout: 10_000 });
      if (name === 'web') expectNoneConnect(await connectAll([['web→db:5432 (web audited, db enforced)', lab.web.netns, lab.db.ip, 5432]]));
    }
    assert.ok(await waitFor(async () => (await tcpConnect(lab.web.netns, lab.db.ip, 5432, 1)).ok, 5000), 'in audit mode web→db:5432 goes through');
    await page.waitForFunction(() => (window as any).__bastion.view.cy.getElementById('audit:e:web>e:db').nonempty(), undefined, { timeout: 5000 });
    assert.ok((await nodeView(page, 'e:web'))!.classes.includes('audit-mode'));
    await screenshot(page, '07-audit-mode');
  });

  it('learn → verify → apply: the proposed policy, its replay, applied; enforcement changes (real connections)', async (t: TestContext) => {
    if (!learningApi) return t.skip('the daemon has no /v1/learn yet (the learning API of issue 14 is not on this branch)');
    await page.locator('button[name="tab-learn"]').click();
    const wf = page.locator('[data-testid="workflow"]');
    await clickNode(page, 'e:web', true);
    await wf.locator('[data-testid="picked"]', { hasText: 'web' }).waitFor();
    await wf.locator('input[name="since"]').fill('1h');
    await wf.locator('button[name="learn"]').click();
    await wf.locator('[data-testid="learned"]').waitFor({ timeout: 20_000 });
    const yaml = await wf.locator('textarea[name="candidate"]').inputValue();
    assert.match(yaml, /5432/, `the proposal covers web→db:5432:\n${yaml}`);
    await screenshot(page, '08-learn');

    await wf.locator('button[name="verify"]').click();
    const verdict = wf.locator('[data-testid="verify-result"]');
    await verdict.waitFor({ timeout: 20_000 });
    assert.equal(await verdict.getAttribute('data-ok'), 'true', await verdict.innerText());
    await screenshot(page, '09-verify');

    await wf.locator('button[name="apply"]').click();
    await wf.locator('[data-testid="applied"]').waitFor({ timeout: 20_000 });
    await wf.locator('button[name="enforce"]').click();
    await page.waitForFunction(() => /enforce/.test(document.querySelector('[data-testid="picked"]')?.textContent ?? ''), undefined, { timeout: 10_000 });
    // db, audited for the observation, enforces again too (through the API the console uses)
    assert.equal((await apiCall<any>(socket, 'PUT', '/v1/containers/db/mode', JSON.stringify({ mode: 'enforce' }))).status, 200);
    // back in enforce mode, web→db:5432 works because the applied policy allows it; the attacker still cannot
    expectAllConnect(await connectAll([['web→db:5432 (learned policy, enforce)', lab.web.netns, lab.db.ip, 5432]]));
    expectNoneConnect(await connectAll([['attacker→db:5432', lab.attacker.netns, lab.db.ip, 5432]]));
    const modes = (await apiCall<any>(socket, 'GET', '/v1/modes')).body;
    assert.equal(modes.containers.find((c: any) => c.name === 'web').mode, 'enforce');
    assert.equal(modes.containers.find((c: any) => c.name === 'db').mode, 'enforce');
    await page.waitForFunction(() => (window as any).__bastion.view.cy.getElementById('p:e:web>e:db').nonempty(), undefined, { timeout: 10_000 });
    await screenshot(page, '10-applied');
  });

  it('a pasted policy is checked (dry run) and applied through the API; one the daemon refuses shows its errors, as the CLI would', async () => {
    await page.locator('button[name="tab-learn"]').click();
    const wf = page.locator('[data-testid="workflow"]');
    const box = wf.locator('textarea[name="candidate"]');
    const bad = 'policies:\n  - { name: console-bad, from: { app: web }, to: { app: api }, ports: ["99999/tcp"] }\n';
    await box.fill(bad);
    await wf.locator('button[name="dry-run"]').click();
    const err = wf.locator('[data-testid="workflow-error"]');
    await err.waitFor({ timeout: 10_000 });
    const direct = await apiCall<ErrorBody>(socket, 'POST', '/v1/policies?dryRun=1&source=console', bad);
    assert.equal(direct.status, 422);
    assert.equal((await err.innerText()).trim(), (direct.body as ErrorBody).errors.join('\n'));
    await screenshot(page, '11-refused-policy');

    expectNoneConnect(await connectAll([['web→api:9090 (no policy)', lab.web.netns, lab.api.ip, 9090]]));
    await box.fill('policies:\n  - { name: console-web-to-api-9090, from: { app: web }, to: { app: api }, ports: ["9090/tcp"] }\n');
    await wf.locator('button[name="dry-run"]').click();
    await wf.locator('[data-testid="dry-run-result"]', { hasText: 'create console-web-to-api-9090' }).waitFor({ timeout: 10_000 });
    expectNoneConnect(await connectAll([['web→api:9090 (after a dry run)', lab.web.netns, lab.api.ip, 9090]]));
    await wf.locator('button[name="apply"]').click();
    await wf.locator('[data-testid="applied"]').waitFor({ timeout: 10_000 });
    expectAllConnect(await connectAll([['web→api:9090 (applied from the console)', lab.web.netns, lab.api.ip, 9090]]));
    expectNoneConnect(await connectAll([['attacker→api:9090', lab.attacker.netns, lab.api.ip, 9090]]));
    const list = (await apiCall<PolicyRow[]>(socket, 'GET', '/v1/policies')).body as PolicyRow[];
    assert.ok(list.some((p) => p.name === 'console-web-to-api-9090' && p.source === 'api'));
    await page.waitForFunction(() => (window as any).__bastion.view.cy.getElementById('p:e:web>e:api').data('label')?.includes('9090/tcp'), undefined, { timeout: 10_000 });
    await screenshot(page, '12-applied-pasted');
  });
});
