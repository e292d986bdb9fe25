/** Reading a daemon's Prometheus metrics in tests. */
import { request } from 'node:http';
import { socketPathFor } from '../../src/api/paths.js';

/** The daemon's Prometheus text (GET /metrics on its socket). */
export function metricsText(pinPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socketPathFor(pinPath), path: '/metrics', timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve(text));
    });
    req.on('error', reject);
    req.end();
  });
}

/** One sample's value from Prometheus text: `name{labels} value`. */
export function metricValue(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(labels ? `${name}{${labels}}` : `${name} `));
  return line ? Number(line.split(' ').pop()) : undefined;
}
