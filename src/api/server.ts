/**
 * The API server: the hono app (src/api/app.ts) on a unix socket only
 * reachable by root (mode 0600 in a 0700 directory): the file system is the
 * authentication, as for the Docker socket.
 */
import type { Server } from 'node:http';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import { createApiApp, type DaemonApi } from './app.js';

export async function startApiServer(socketPath: string, api: DaemonApi): Promise<Server> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
  if (existsSync(socketPath)) unlinkSync(socketPath);
  const app = createApiApp(api);
  // hostname: the host of requests that name none (HTTP/1.0 without a Host header); it is never listened on
  const server = createAdaptorServer({ fetch: app.fetch, hostname: 'bastion' }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  return server;
}
