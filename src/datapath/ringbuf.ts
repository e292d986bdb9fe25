/**
 * Reading a BPF ring buffer (bastion_events) from the agent's event loop.
 *
 * libbpf's ring_buffer__consume walks the records the datapath committed
 * and calls a C callback for each; here that callback is a koffi registered
 * callback that copies the record into the reader's Buffer (the record
 * lives in the shared mapping and is reused as soon as the callback returns)
 * and hands it to the JS listener, which decodes it before the next one.
 * Everything happens synchronously on the main thread: no worker, no
 * blocking ring_buffer__poll.
 *
 * What triggers a consume:
 *  - 'epoll' (default): libuv watches libbpf's epoll fd, which turns readable
 *    when the kernel signals new data, so events arrive with no added delay
 *    and an idle agent does no work;
 *  - 'interval': a timer every `intervalMs` (25 ms by default).
 * Both modes also drain whatever is left on stop().
 */
import koffi from 'koffi';
import { lib, libbpfError, type Pointer } from './libbpf.js';
import { libcFunction } from '../sys/libc.js';

/**
 * Called once per record. The record's bytes are the reader's own and are
 * overwritten by the next record: decode them in the call, or copy them
 * (Buffer.from) to keep them.
 */
export type RingBufListener = (record: Buffer) => void;

type Memcpy = (dst: Buffer, src: Pointer, n: number) => Pointer;

export interface RingBufOptions {
  wakeup?: 'epoll' | 'interval';
  /** period of the 'interval' mode */
  intervalMs?: number;
  /** a listener threw: the record is dropped, reading continues (default: print to stderr) */
  onError?: (err: unknown) => void;
}

export class RingBufReader {
  private rb: Pointer | undefined;
  private cb: Pointer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private poller: ReturnType<typeof koffi.node.poll> | undefined;
  private total = 0;
  /** where each record is copied to before the listener sees it (grows for a larger record) */
  private scratch = Buffer.alloc(256);
  /** inside ring_buffer__consume: libbpf's reader must not be re-entered or freed now */
  private consuming = false;
  private closeRequested = false;
  private readonly wakeup: 'epoll' | 'interval';
  private readonly intervalMs: number;
  private readonly onError: (err: unknown) => void;

  /** `mapFd`: a BPF_MAP_TYPE_RINGBUF map (the reader does not own the fd). */
  constructor(
    private readonly mapFd: number,
    private readonly listener: RingBufListener,
    opts: RingBufOptions = {},
  ) {
    this.wakeup = opts.wakeup ?? 'epoll';
    this.intervalMs = opts.intervalMs ?? 25;
    this.onError = opts.onError ?? ((e) => console.error('ring buffer listener failed:', e));
  }

  /** records delivered to the listener since construction */
  get consumed(): number {
    return this.total;
  }

  get running(): boolean {
    return this.timer !== undefined || this.poller !== undefined;
  }

  /** Sets up libbpf's reader (first time) and starts consuming on wake-ups or on the timer. */
  start(): void {
    if (this.running) return;
    this.open();
    if (this.wakeup === 'epoll') {
      const efd = lib().ring_buffer__epoll_fd(this.rb!);
      if (efd < 0) throw libbpfError('ring_buffer__epoll_fd', efd);
      this.poller = koffi.node.poll(efd, { readable: true }, () => this.tick());
    } else {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
    }
  }

  /** Stops waking up (the reader stays usable: consume() or start() again); drains what is pending. */
  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.poller) this.poller.close();
    this.poller = undefined;
    // From a listener (inside a consume) the running consume drains the rest.
    return this.rb && !this.consuming ? this.consume() : 0;
  }

  /** A wake-up: consume, reporting failures instead of throwing into the event loop. */
  private tick(): void {
    if (this.consuming || !this.rb) return;
    try {
      this.consume();
    } catch (e) {
      this.onError(e);
    }
  }

  /**
   * Delivers every committed record now; returns how many. Usable without
   * start() for callers that drive reading themselves (tests, `bastion flows`).
   */
  consume(): number {
    if (this.consuming) throw new Error('RingBufReader.consume() called from its own listener');
    this.open();
    this.consuming = true;
    let n: number;
    try {
      n = lib().ring_buffer__consume(this.rb!);
    } finally {
      this.consuming = false;
      if (this.closeRequested) this.close();
    }
    if (n < 0) throw libbpfError('ring_buffer__consume', n, `map fd ${this.mapFd}`);
    return n;
  }

  /** Stops and frees libbpf's reader and the callback slot (deferred until a running consume returns). */
  close(): void {
    if (this.consuming) {
      this.closeRequested = true;
      return;
    }
    this.closeRequested = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.poller) this.poller.close();
    this.poller = undefined;
    if (this.rb) lib().ring_buffer__free(this.rb);
    this.rb = undefined;
    if (this.cb) koffi.unregister(this.cb);
    this.cb = undefined;
  }

  private open(): void {
    if (this.rb) return;
    const l = lib();
    const memcpy = libcFunction<Memcpy>('void *memcpy(void *dst, const void *src, size_t n)');
    // Registered, not transient: libbpf keeps the pointer inside the
    // ring_buffer and calls it from every later consume.
    this.cb = koffi.register(
      (_ctx: Pointer | null, data: Pointer, size: number | bigint): number => {
        if (this.closeRequested) return 0; // closed by a listener: drop the rest of this batch
        const len = Number(size);
        // Copy out: the record aliases the ring, which the producer reuses
        // once we return. The copy goes into the reader's own buffer with a
        // plain memcpy. A koffi.view per record made an external
        // ArrayBuffer whose malloc'd bookkeeping is freed later by V8's
        // sweeper, scattered between live blocks where only a trim gives it
        // back: 20 s at 15,000 records a second ended with 6.1 MB of glibc
        // heap that way, 2.9 MB with the memcpy.
        if (len > this.scratch.length) this.scratch = Buffer.alloc(Math.max(len, 2 * this.scratch.length));
        memcpy(this.scratch, data, len);
        const record = this.scratch.subarray(0, len);
        this.total++;
        try {
          this.listener(record);
        } catch (e) {
          this.onError(e);
        }
        return 0; // a negative value would stop the consume midway
      },
      koffi.pointer(l.RingBufferSampleFn),
    );
    const rb = l.ring_buffer__new(this.mapFd, this.cb, null, null);
    if (!rb) {
      const errno = l.errno() || 22;
      koffi.unregister(this.cb);
      this.cb = undefined;
      throw libbpfError('ring_buffer__new', errno, `map fd ${this.mapFd}`);
    }
    this.rb = rb;
  }
}
