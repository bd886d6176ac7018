// Benchmarks the gradient all-reduce on loopback, each rank in its own Node
// process, against the raw TCP bandwidth between two Node processes.
//
//   npx tsc -p . && node dist/scripts/bench-allreduce.js \
//     [--sizes 11173962,23520842] [--workers 2,4] [--iters 5] [--warmup 2] \
//     [--algos ring,star,local,gloo] [--wires fp32,bf16,fp16] [--chunk 262144] \
//     [--python /usr/bin/python3] [--out runs/bench-allreduce.json]
//
// By default every algorithm and every wire format: ring in fp32, bf16 and
// fp16 (16-bit wires are compressed, labelled so in every row); star and
// local (threads of this process sharing memory) in fp32 only; gloo in fp32 and in whatever 16-bit dtypes PyTorch's gloo all-reduces
// (its sums are then 16-bit too). Each row: algo, wire, compressed, workers,
// elements, medianMs, busbwGBs and busbwVsTcp (the ratio to raw TCP), in the
// JSON (`results`) and the table.
//
// `gloo` is PyTorch's CPU all-reduce, the obvious alternative, measured in the
// same run by scripts/torch_gloo_allreduce.py where python3-torch is installed
// (Debian); without it the script says so and measures the rest.
//
// 'local' rows come from measureLocalAllReduce (bench-local-allreduce.ts,
// which still runs alone against gloo, as docs/BENCHMARKS.md section 1 shows).
//
// The same file is the child program: `--role ring-worker|star-worker|tcp-sink|tcp-source`.
// Reported per all-reduce: time (slowest rank, after an IPC barrier), algbw =
// gradient bytes / time, busbw = algbw * 2 (N-1) / N (the nccl-tests convention,
// which is the per-link traffic of an optimal all-reduce; applied to the star too
// so both are on one scale).

import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { availableParallelism, cpus } from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';

import {
  connectToStarHub,
  DEFAULT_CHUNK_ELEMENTS,
  RingAllReducer,
  RingEndpoint,
  StarAllReducer,
  StarHub,
  StarHubServer,
  type AllReducer,
  type PeerAddress,
} from '../src/common/allreduce/index.js';
import { WIRE_NAMES, type WireName } from '../src/common/allreduce/wire-format.js';
import { choiceFlag, exitOnUsageError, intFlag, listFlag, portFlag } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { measureGloo } from './gloo-allreduce.js';
import { stats, type Stats } from './timing-stats.js';
import { measureLocalAllReduce } from './bench-local-allreduce.js';
import { measurePeakRss } from './peak-rss.js';

const SCRIPT = fileURLToPath(import.meta.url);
// 'local' is the shared-memory all-reduce of thread replicas in this process
// (bench-local-allreduce.ts), fp32 only, like the star.
const ALGOS = ['ring', 'star', 'local', 'gloo'] as const;
type Algo = (typeof ALGOS)[number];

// ---------------------------------------------------------------------------
// IPC plumbing

type Message = { type: string; [key: string]: unknown };

/** A forked child with a queue of the messages it has sent us. */
class Child {
  private readonly inbox: Message[] = [];
  private waiter: { type: string; resolve: (m: Message) => void; reject: (e: Error) => void } | undefined;
  private exitError: Error | undefined;
  readonly proc: ChildProcess;

  constructor(readonly name: string, args: string[]) {
    // BENCH_PROF=dir: every child writes a V8 CPU profile there (NODE_OPTIONS may not carry --cpu-prof).
    const profile = process.env.BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROF}`] : [];
    this.proc = fork(SCRIPT, args, { execArgv: profile, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: Message) => {
      if (m.type === 'error') return this.fail(new Error(`${name}: ${String(m.message)}`));
      if (this.waiter && this.waiter.type === m.type) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(m);
      } else {
        this.inbox.push(m);
      }
    });
    this.proc.on('exit', (code, signal) => {
      if (code !== 0) this.fail(new Error(`${name} exited with ${signal ?? `code ${code}`}`));
    });
  }

  send(m: Message): void {
    this.proc.send(m);
  }

  next<T extends Message>(type: string): Promise<T> {
    const i = this.inbox.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0] as T);
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      this.waiter = { type, resolve: resolve as (m: Message) => void, reject };
    });
  }

  exited(): Promise<void> {
    if (this.proc.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => this.proc.once('exit', () => resolve()));
  }

  private fail(err: Error): void {
    this.exitError ??= err;
    this.waiter?.reject(err);
    this.waiter = undefined;
  }
}

function toParent(m: Message): void {
  process.send!(m);
}

/** The next message from the parent whose type is one of `types`. */
function fromParent(...types: string[]): Promise<Message> {
  return new Promise((resolve) => {
    const onMessage = (m: Message) => {
      if (!types.includes(m.type)) return;
      process.off('message', onMessage);
      resolve(m);
    };
    process.on('message', onMessage);
  });
}

// ---------------------------------------------------------------------------
// Worker side

/** Integer-valued gradient whose sum over ranks is exact in float32, so the result can be checked. */
function fillGradient(buf: Float32Array, rank: number): void {
  for (let i = 0; i < buf.length; i++) buf[i] = ((i * 7 + rank * 13) % 1024) - 512;
}

function expectedSum(i: number, worldSize: number): number {
  let s = 0;
  for (let r = 0; r < worldSize; r++) s += ((i * 7 + r * 13) % 1024) - 512;
  return s;
}

/** FNV-1a over the float bits: equal on every rank iff the replicas are bit-identical (with overwhelming probability). */
function checksum(buf: Float32Array): string {
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length);
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], 0x01000193);
  return (h >>> 0).toString(16);
}

/** How far a compressed wire may move an element of the test gradient's sum (|sum| <= 512 N, rounded once per hop). */
function tolerance(wire: WireName, worldSize: number): number {
  if (wire === 'fp32') return 0;
  return worldSize * 512 * worldSize * (wire === 'bf16' ? 2 ** -8 : 2 ** -11);
}

async function runWorker(reducer: AllReducer, rank: number, worldSize: number, size: number, wire: WireName = 'fp32'): Promise<void> {
  const buf = new Float32Array(size);
  toParent({ type: 'ready' });
  for (let step = 0; ; step++) {
    fillGradient(buf, rank); // outside the timed region
    const cmd = await fromParent('run', 'finish');
    if (cmd.type === 'finish') break;
    const t0 = performance.now();
    await reducer.allReduceSum(buf, step);
    toParent({ type: 'done', ms: performance.now() - t0 });
  }
  // Check the last result: exact values at sampled positions, and a checksum for cross-rank identity.
  await reducer.allReduceSum(buf, 0xffffffff);
  let wrong = 0;
  const stride = Math.max(1, Math.floor(size / 4096));
  const tol = tolerance(wire, worldSize);
  for (let i = 0; i < size; i += stride) if (!(Math.abs(buf[i] - expectedSum(i, worldSize)) <= tol)) wrong++;
  if (size > 0 && !(Math.abs(buf[size - 1] - expectedSum(size - 1, worldSize)) <= tol)) wrong++;
  // maxRSS is in KiB: the peak of this rank's whole process, buffers and sockets included.
  toParent({ type: 'result', checksum: checksum(buf), wrong, peakRssMb: process.resourceUsage().maxRSS / 1024 });
  // Leave only when told, so the star hub is closed first and does not see a lost worker.
  await fromParent('exit');
  await reducer.close();
}

async function ringWorker(rank: number, worldSize: number, size: number, chunk: number, wire: WireName): Promise<void> {
  const endpoint = await RingEndpoint.listen({ rank, worldSize });
  toParent({ type: 'listening', address: endpoint.address });
  const { prev } = (await fromParent('connect')) as unknown as { prev: PeerAddress };
  const links = await endpoint.connect(prev);
  await runWorker(new RingAllReducer(links, { chunkElements: chunk, wire }), rank, worldSize, size, wire);
}

async function starWorker(rank: number, worldSize: number, size: number, chunk: number): Promise<void> {
  const { hub } = (await fromParent('connect')) as unknown as { hub: PeerAddress };
  const link = await connectToStarHub(hub, { rank, worldSize });
  await runWorker(new StarAllReducer(link, rank, worldSize, { chunkElements: chunk }), rank, worldSize, size);
}

const TCP_WRITE_BYTES = 1 << 20;

/** Receives `bytes` per round and acknowledges each round with one byte. */
async function tcpSink(bytes: number): Promise<void> {
  const server = createServer((socket: Socket) => {
    let got = 0;
    socket.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= bytes) {
        got -= bytes;
        socket.write(Buffer.of(1));
      }
    });
    socket.on('close', () => server.close());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  toParent({ type: 'listening', port: (server.address() as AddressInfo).port });
  await new Promise((r) => server.once('close', r));
}

/** Sends `bytes` per round from one reused buffer (no copies), timing until the sink's ack. */
async function tcpSource(bytes: number, port: number, rounds: number): Promise<void> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
  socket.setNoDelay(true);
  const block = Buffer.alloc(TCP_WRITE_BYTES, 0x5a);
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const acked = new Promise<void>((r) => socket.once('data', () => r()));
    const t0 = performance.now();
    for (let sent = 0; sent < bytes; ) {
      const n = Math.min(TCP_WRITE_BYTES, bytes - sent);
      sent += n;
      if (!socket.write(n === TCP_WRITE_BYTES ? block : block.subarray(0, n))) {
        await new Promise((r) => socket.once('drain', r));
      }
    }
    await acked;
    times.push(performance.now() - t0);
  }
  socket.end();
  toParent({ type: 'times', times });
}

// ---------------------------------------------------------------------------
// Parent side

interface Row extends Stats {
  algo: string;
  /** What travelled: fp32, or a 16-bit format (compressed: lossy sums). */
  wire: WireName;
  compressed: boolean;
  workers: number;
  elements: number;
  bytes: number;
  algbwGBs: number;
  busbwGBs: number;
  busbwVsTcp: number;
  /** Peak resident memory of the largest rank process (no tensors here: the all-reduce works on plain Float32Arrays). */
  peakRssMb: number;
  timesMs: number[];
}

async function measureTcp(bytes: number, rounds: number): Promise<number[]> {
  const sink = new Child('tcp-sink', ['--role', 'tcp-sink', '--bytes', String(bytes)]);
  const { port } = await sink.next<{ type: string; port: number }>('listening');
  const source = new Child('tcp-source', ['--role', 'tcp-source', '--bytes', String(bytes), '--port', String(port), '--rounds', String(rounds)]);
  const { times } = await source.next<{ type: string; times: number[] }>('times');
  await Promise.all([sink.exited(), source.exited()]);
  return times;
}

async function measureAllReduce(
  algo: 'ring' | 'star',
  workers: number,
  size: number,
  iters: number,
  warmup: number,
  chunk: number,
  wire: WireName,
): Promise<{ times: number[]; peakRssMb: number }> {
  const common = ['--world', String(workers), '--size', String(size), '--chunk', String(chunk), '--wire-format', wire];
  const children = Array.from(
    { length: workers },
    (_, rank) => new Child(`${algo} rank ${rank}`, ['--role', `${algo}-worker`, '--rank', String(rank), ...common]),
  );
  let hub: StarHub | undefined;
  let serving: Promise<void> | undefined;
  if (algo === 'ring') {
    const addresses = await Promise.all(children.map((c) => c.next<{ type: string; address: PeerAddress }>('listening')));
    children.forEach((c, rank) => c.send({ type: 'connect', prev: addresses[(rank - 1 + workers) % workers].address }));
  } else {
    // The hub lives in this process, as it lives in the coordinator.
    const server = await StarHubServer.listen({ worldSize: workers });
    for (const c of children) c.send({ type: 'connect', hub: server.address });
    hub = new StarHub(await server.accept());
    serving = hub.serve();
    serving.catch(() => {}); // a hub failure also fails the workers, which report it
  }
  await Promise.all(children.map((c) => c.next('ready')));

  const times: number[] = [];
  for (let i = 0; i < warmup + iters; i++) {
    for (const c of children) c.send({ type: 'run' });
    const done = await Promise.all(children.map((c) => c.next<{ type: string; ms: number }>('done')));
    if (i >= warmup) times.push(Math.max(...done.map((d) => d.ms)));
  }
  for (const c of children) c.send({ type: 'finish' });
  const results = await Promise.all(children.map((c) => c.next<{ type: string; checksum: string; wrong: number; peakRssMb: number }>('result')));
  await hub?.close();
  await serving;
  for (const c of children) c.send({ type: 'exit' });
  await Promise.all(children.map((c) => c.exited()));
  const wrong = results.reduce((a, r) => a + r.wrong, 0);
  const sums = new Set(results.map((r) => r.checksum));
  if (wrong > 0) throw new Error(`${algo} N=${workers} P=${size}: ${wrong} sampled elements have the wrong sum`);
  if (sums.size !== 1) throw new Error(`${algo} N=${workers} P=${size}: ranks ended with different bits (${[...sums]})`);
  return { times, peakRssMb: Math.max(...results.map((r) => r.peakRssMb)) };
}

interface Options {
  sizes: number[];
  workers: number[];
  iters: number;
  warmup: number;
  algos: Algo[];
  wires: WireName[];
  wire?: WireName[];
  wireFormat: WireName;
  chunk: number;
  python: string;
  out: string;
  // The rank processes' own flags (hidden from --help).
  role?: Role;
  rank: number;
  world: number;
  size: number;
  bytes: number;
  port: number;
  rounds: number;
}

const ROLES = ['ring-worker', 'star-worker', 'tcp-sink', 'tcp-source'] as const;
type Role = (typeof ROLES)[number];

const internal = (flags: string, parse: (value: string) => number) => new Option(flags).argParser(parse).hideHelp();

const program = exitOnUsageError(new Command('bench-allreduce')
  .description('Ring vs star vs shared-memory threads (local) vs PyTorch gloo: all-reduce of gradient-sized buffers on loopback, against raw TCP; by default every algorithm and wire format')
  .addOption(new Option('--sizes <list>', 'gradient sizes in float32 elements (ResNet18, ResNet50)').argParser(listFlag(intFlag(1), '11173962,23520842'))
    .default([11173962, 23520842], '11173962,23520842'))
  .addOption(new Option('--workers <list>', 'rank counts, 2 or more').argParser(listFlag(intFlag(2))).default([2, 4], '2,4'))
  .addOption(new Option('--iters <n>', 'timed all-reduces per configuration').argParser(intFlag(1)).default(5))
  .addOption(new Option('--warmup <n>', 'untimed all-reduces before them').argParser(intFlag(0)).default(2))
  .addOption(new Option('--algos <list>', `algorithms, of ${ALGOS.join(', ')}`).argParser(listFlag(choiceFlag(ALGOS), 'ring,star')).default([...ALGOS], ALGOS.join(',')))
  .addOption(new Option('--wires <list>', `wire formats, of ${WIRE_NAMES.join(', ')} (bf16/fp16 are compressed; star and local are fp32 only)`)
    .argParser(listFlag(choiceFlag(WIRE_NAMES), 'fp32,bf16')).default([...WIRE_NAMES], WIRE_NAMES.join(',')))
  .addOption(new Option('--wire <list>', 'same as --wires').argParser(listFlag(choiceFlag(WIRE_NAMES), 'bf16')).hideHelp())
  .addOption(new Option('--chunk <n>', 'elements per all-reduce message').argParser(intFlag(1)).default(DEFAULT_CHUNK_ELEMENTS))
  .option('--python <path>', 'python3 with PyTorch, for gloo', '/usr/bin/python3')
  .option('--out <file>', 'JSON report', 'runs/bench-allreduce.json')
  .addOption(new Option('--role <role>').choices([...ROLES]).hideHelp())
  .addOption(new Option('--wire-format <name>').choices([...WIRE_NAMES]).default('fp32').hideHelp())
  .addOption(internal('--rank <n>', intFlag(0)))
  .addOption(internal('--world <n>', intFlag(1)))
  .addOption(internal('--size <n>', intFlag(1)))
  .addOption(internal('--bytes <n>', intFlag(1)))
  .addOption(internal('--port <n>', portFlag))
  .addOption(internal('--rounds <n>', intFlag(1)))
  .addHelpText('after', `
Every row (the JSON's "results" and the table) carries:
  algo        ring, star, local (shared memory between threads of this process) or gloo (PyTorch's CPU all-reduce, same run)
  wire        fp32, bf16 or fp16; bf16/fp16 are compressed (lossy sums), marked so
  workers     ranks (N): processes, or threads for local
  elements    float32 elements per gradient
  medianMs    median time of the slowest rank (local: rank 0's, every call a barrier); mean, std, every time too
  busbwGBs    algbw * 2(N-1)/N, on the fp32 bytes for every wire
  busbwVsTcp  busbw / raw TCP between two Node processes, same run
  peakRssMb   largest rank's peak RSS (local: this process's, all its threads)`));

/** A rank process (forked by the parent with --role): runs its part and reports over IPC. */
async function child(role: Role, o: Options): Promise<void> {
  const roles: Record<Role, () => Promise<void>> = {
    'ring-worker': () => ringWorker(o.rank, o.world, o.size, o.chunk, o.wireFormat),
    'star-worker': () => starWorker(o.rank, o.world, o.size, o.chunk),
    'tcp-sink': () => tcpSink(o.bytes),
    'tcp-source': () => tcpSource(o.bytes, o.port, o.rounds),
  };
  try {
    await roles[role]();
    process.disconnect(); // the IPC channel would otherwise keep the child alive
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    toParent({ type: 'error', message: process.env.TFJS_DDP_DEBUG && err instanceof Error ? err.stack ?? message : message });
    // Let the IPC message flush before exiting.
    setTimeout(() => process.exit(1), 100);
  }
}

async function main(opts: Options): Promise<void> {
  const { sizes, workers: workerCounts, iters, warmup, algos, chunk } = opts;
  const wires = opts.wire ?? opts.wires;
  console.log(`all-reduce benchmark: ${cpus().length} CPUs (${availableParallelism()} usable), node ${process.version}, chunk ${chunk} floats, ${iters} iterations after ${warmup} warm-up`);
  const tcp: Record<number, Stats & { GBs: number; timesMs: number[] }> = {};
  const rows: Row[] = [];
  let glooMissing = false;
  for (const size of sizes) {
    const bytes = size * 4;
    const tcpTimes = await measureTcp(bytes, warmup + iters);
    const tcpStats = stats(tcpTimes.slice(warmup));
    tcp[size] = { ...tcpStats, GBs: bytes / tcpStats.medianMs / 1e6, timesMs: tcpTimes.slice(warmup) };
    console.log(`raw TCP loopback, ${(bytes / 1e6).toFixed(1)} MB one way: ${tcpStats.medianMs.toFixed(1)} ms median = ${tcp[size].GBs.toFixed(2)} GB/s`);
    for (const workers of workerCounts) {
      for (const algo of algos) {
        for (const wire of wires) {
          if ((algo === 'star' || algo === 'local') && wire !== 'fp32') continue; // they sum in fp32 only
          if (algo === 'gloo' && glooMissing) continue;
          const label = `${algo} ${wire}${wire === 'fp32' ? '' : ' (compressed)'}`;
          let measured: { times: number[]; peakRssMb: number };
          if (algo === 'gloo') {
            try {
              measured = await measureGloo(opts.python, workers, size, iters, warmup, wire);
            } catch (err) {
              const why = (err as { stderr?: string }).stderr?.trim().split('\n').at(-1) ?? (err as Error).message;
              if (wire === 'fp32') {
                console.log(`gloo: not measured (${why}); install python3-torch (Debian) to compare`);
                glooMissing = true;
              } else {
                console.log(`${label}: not measured (PyTorch's gloo: ${why})`);
              }
              continue;
            }
          } else if (algo === 'local') {
            // Threads of this process: its peak RSS while they run is the row's.
            const { result, peakRssMb } = await measurePeakRss(() => measureLocalAllReduce(workers, size, iters, warmup));
            measured = { times: result.times, peakRssMb };
          } else {
            measured = await measureAllReduce(algo, workers, size, iters, warmup, chunk, wire);
          }
          const { times, peakRssMb } = measured;
          const s = stats(times);
          const algbw = bytes / s.medianMs / 1e6;
          const busbw = (algbw * 2 * (workers - 1)) / workers;
          rows.push({
            algo,
            wire,
            compressed: wire !== 'fp32',
            workers,
            elements: size,
            bytes,
            ...s,
            algbwGBs: algbw,
            busbwGBs: busbw,
            busbwVsTcp: busbw / tcp[size].GBs,
            peakRssMb,
            timesMs: times,
          });
          console.log(
            `${label.padEnd(22)} N=${workers} ${(bytes / 1e6).toFixed(1).padStart(6)} MB: ` +
              `median ${s.medianMs.toFixed(1).padStart(7)} ms, mean ${s.meanMs.toFixed(1)} ± ${s.stdMs.toFixed(1)} ms, ` +
              `algbw ${algbw.toFixed(2)} GB/s, busbw ${busbw.toFixed(2)} GB/s (${((100 * busbw) / tcp[size].GBs).toFixed(0)}% of raw TCP), ` +
              `peak RSS ${peakRssMb.toFixed(0)} MB per rank`,
          );
        }
      }
    }
  }

  // busbw counts fp32 bytes (the gradient's size) for every wire, so a
  // compressed row's busbw is the fp32 traffic it stands in for.
  console.log('\n| algo | wire | N | elements | MB | median ms | mean ± std ms | algbw GB/s | busbw GB/s | busbw / raw TCP | peak RSS MB (largest rank) |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.algo} | ${r.wire}${r.compressed ? ' (compressed)' : ''} | ${r.workers} | ${r.elements} | ${(r.bytes / 1e6).toFixed(1)} | ${r.medianMs.toFixed(1)} | ` +
        `${r.meanMs.toFixed(1)} ± ${r.stdMs.toFixed(1)} | ${r.algbwGBs.toFixed(2)} | ${r.busbwGBs.toFixed(2)} | ${(100 * r.busbwVsTcp).toFixed(0)}% | ` +
        `${r.peakRssMb.toFixed(0)} |`,
    );
  }
  const report = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    chunkElements: chunk,
    iters,
    warmup,
    rawTcp: Object.entries(tcp).map(([elements, t]) => ({ elements: Number(elements), bytes: Number(elements) * 4, ...t })),
    results: rows,
  };
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, JSON.stringify(report, null, 2) + '\n');
  console.log(`\nwrote ${opts.out}`);
}

program.parse();
const opts = program.opts<Options>();
if (opts.role !== undefined) await child(opts.role, opts);
else await runMain('bench-allreduce', () => main(opts));
