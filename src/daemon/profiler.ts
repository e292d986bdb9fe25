/**
 * An optional V8 CPU profile of the daemon's steady state, for finding where
 * its time goes under load (docs/benchmarks.md). It starts once the
 * programs are loaded: `node --cpu-prof` samples with signals from the
 * start, and a signal pending in the BPF verifier fails the program load
 * with EAGAIN.
 */
import { Session } from 'node:inspector/promises';
import { writeFile } from 'node:fs/promises';

export class CpuProfiler {
  private session?: Session;

  /** intervalUs: V8's sampling interval (default 1,000 µs; 100 µs resolves an update of a few ms) */
  constructor(
    private readonly file: string | undefined,
    private readonly intervalUs?: number,
  ) {}

  async start(): Promise<void> {
    if (!this.file || this.session) return;
    this.session = new Session();
    this.session.connect();
    await this.session.post('Profiler.enable');
    if (this.intervalUs && this.intervalUs > 0) await this.session.post('Profiler.setSamplingInterval', { interval: Math.round(this.intervalUs) });
    await this.session.post('Profiler.start');
  }

  async stop(): Promise<void> {
    if (!this.session || !this.file) return;
    const { profile } = await this.session.post('Profiler.stop');
    await writeFile(this.file, JSON.stringify(profile));
    this.session.disconnect();
    this.session = undefined;
  }
}
