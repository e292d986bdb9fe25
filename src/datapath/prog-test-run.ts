/**
 * BPF_PROG_TEST_RUN for tc programs: run a program on a synthetic frame,
 * in the kernel, without any interface or traffic. The datapath tests use it
 * to check verdicts and rewritten frames (e.g. an ARP reply) packet by packet.
 *
 * For tc (sched_cls) programs the kernel builds an skb from `packet` (which
 * must start with an Ethernet header) and, when a __sk_buff context is given,
 * takes a few fields from it. Only these fields may be non-zero
 * (net/bpf/test_run.c, convert___skb_to_skb): mark, priority,
 * ingress_ifindex, ifindex, cb[], tstamp, wire_len, gso_segs, gso_size,
 * hwtstamp. `ifindex` must name an interface of the caller's network
 * namespace: the skb's device is set to it (otherwise loopback), which is
 * what skb->ifindex returns to the program.
 */
import koffi from 'koffi';
import { lib, libbpfError, type TestRunOpts } from './libbpf.js';

/** sizeof(struct bpf_test_run_opts) in libbpf 1.1 */
const TEST_RUN_OPTS_SIZE = 80;
/** sizeof(struct __sk_buff) and the offsets we set (linux/bpf.h) */
const SK_BUFF_SIZE = 192;
const SKB_MARK = 8;
const SKB_PRIORITY = 32;
const SKB_INGRESS_IFINDEX = 36;
const SKB_IFINDEX = 40;

export interface TestRunOptions {
  /** skb->ifindex (and the skb's device): a host-side veth, for instance */
  ifindex?: number;
  /** skb->ingress_ifindex */
  ingressIfindex?: number;
  /** skb->mark */
  mark?: number;
  /** skb->priority */
  priority?: number;
  /** run this many times (duration is then the average); default 1 */
  repeat?: number;
  /** room for the output frame; default: input + 2 KiB (programs may grow the frame) */
  dataOutSize?: number;
}

export interface TestRunResult {
  /** the program's return value (TC_ACT_*) */
  retval: number;
  /** the frame after the program ran */
  dataOut: Buffer;
  /** average run time, in ns */
  duration: number;
  /** the __sk_buff after the run, when a context was passed */
  ctxOut?: Buffer;
}

export function testRun(progFd: number, packet: Buffer, opts: TestRunOptions = {}): TestRunResult {
  const l = lib();
  const dataOut = Buffer.alloc(opts.dataOutSize ?? packet.length + 2048);

  const wantCtx =
    opts.ifindex !== undefined || opts.ingressIfindex !== undefined || opts.mark !== undefined || opts.priority !== undefined;
  let ctxIn: Buffer | undefined;
  let ctxOut: Buffer | undefined;
  if (wantCtx) {
    ctxIn = Buffer.alloc(SK_BUFF_SIZE);
    ctxIn.writeUInt32LE(opts.mark ?? 0, SKB_MARK);
    ctxIn.writeUInt32LE(opts.priority ?? 0, SKB_PRIORITY);
    ctxIn.writeUInt32LE(opts.ingressIfindex ?? 0, SKB_INGRESS_IFINDEX);
    ctxIn.writeUInt32LE(opts.ifindex ?? 0, SKB_IFINDEX);
    ctxOut = Buffer.alloc(SK_BUFF_SIZE);
  }

  // The struct carries raw addresses: the Buffers stay referenced (and V8
  // never moves ArrayBuffer backing stores) until the synchronous call returns.
  const o = runOpts(packet, dataOut, opts.repeat ?? 1, ctxIn, ctxOut);
  const ret = l.bpf_prog_test_run_opts(progFd, o);
  // Keep the buffers alive past the call for certain (the struct only holds addresses).
  void packet.length;
  void ctxIn?.length;
  if (ret < 0) {
    const why = ret === -28 ? `output frame larger than ${dataOut.length} bytes (raise dataOutSize)` : `prog fd ${progFd}`;
    throw libbpfError('bpf_prog_test_run_opts', ret, why);
  }
  return {
    retval: o.retval,
    dataOut: dataOut.subarray(0, o.data_size_out),
    duration: o.duration,
    ...(ctxOut ? { ctxOut: ctxOut.subarray(0, o.ctx_size_out) } : {}),
  };
}

/**
 * Run a program once on a libuv worker thread and resolve with its return
 * value: for a program that takes long enough to matter to the event loop
 * (ct_gc walks the whole conntrack table: milliseconds on a full one, which
 * would otherwise hold every API request, flow event and timer behind it).
 * The kernel runs it in that thread's context, as it would in the main one.
 */
export function testRunAsync(progFd: number, packet: Buffer): Promise<number> {
  const l = lib();
  const dataOut = Buffer.alloc(packet.length + 2048);
  const o = runOpts(packet, dataOut, 1);
  const run = l.bpf_prog_test_run_opts as unknown as { async(fd: number, opts: TestRunOpts, cb: (err: unknown, ret: number) => void): void };
  return new Promise((resolve, reject) => {
    run.async(progFd, o, (err, ret) => {
      // the struct holds the Buffers' addresses only: they stay referenced until here
      void packet.length;
      void dataOut.length;
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else if (ret < 0) reject(libbpfError('bpf_prog_test_run_opts', ret, `prog fd ${progFd}`));
      else resolve(o.retval);
    });
  });
}

/** struct bpf_test_run_opts for these buffers (addresses only: the caller keeps the Buffers referenced until the run returns) */
function runOpts(packet: Buffer, dataOut: Buffer, repeat: number, ctxIn?: Buffer, ctxOut?: Buffer): TestRunOpts {
  if (packet.length < 14) throw new Error(`testRun: a tc program needs at least an Ethernet header (got ${packet.length} bytes)`);
  return {
    sz: TEST_RUN_OPTS_SIZE,
    data_in: koffi.address(packet),
    data_out: koffi.address(dataOut),
    data_size_in: packet.length,
    data_size_out: dataOut.length,
    ctx_in: ctxIn ? koffi.address(ctxIn) : null,
    ctx_out: ctxOut ? koffi.address(ctxOut) : null,
    ctx_size_in: ctxIn?.length ?? 0,
    ctx_size_out: ctxOut?.length ?? 0,
    retval: 0,
    repeat,
    duration: 0,
    flags: 0,
    cpu: 0,
    batch_size: 0,
  };
}
