// Scaling of the real step machinery under GPU-class compute (issue 14).
// GPUs are not available here, so forward and backward are emulated
// (scripts/bench-step-rank.ts): each parameter's gradient is released when a
// GPU whose forward+backward takes --compute-ms would produce it (its
// layer's share of the FLOPs, model/flops.ts), and filled with real values.
// Everything after that is the real code: buckets, the communication thread,
// the ring over WebSockets, the optimizer's bucketed SGD and its commit.
//
// --link loopback: the ranks are worker threads of this process (or, with
// --ranks processes, child processes), the ring on 127.0.0.1.
// --link netns (root, iproute2): N emulated hosts, network namespaces joined
// through a switch namespace by veth pairs, each host's link shaped to
// --rate and --delay (scripts/netns-links.sh, as scripts/netns-cluster.sh
// does); rank r is a process in namespace tfddp-h<r+1> listening on
// 10.77.0.<r+1>. The namespaces are removed on exit, failure or Ctrl-C.
// Each rank has its own communication thread.
//
//   node dist/scripts/bench-step.js [--workers 1,2,4] [--wire fp32,bf16] [--overlap on,off] \
//     [--link loopback,netns] [--rate 10gbit] [--delay 0.05ms] [--ranks threads|processes] \
//     [--compute-ms 150] [--model resnet50] [--width 64] [--batch 32] [--bucket-mb 25] \
//     [--steps 8] [--warmup 2] [--timeline runs/bench-step-trace.json] [--out runs/bench-step.json]
//
// Rows: {workers, link, ranks, wire, compressed, overlap, computeMs, stepMs, exposedCommMs, efficiency},
// where link is 'loopback' or 'netns-<rate>', stepMs and exposedCommMs (the
// time the step waits for sums after backward) are rank 0's medians, and
// efficiency = stepMs at N=1 / stepMs at N. The N=1 baseline (no
// communication) is measured once and serves every link.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomInt } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import { Command, InvalidArgumentError, Option } from 'commander';
import { choiceFlag, exitOnUsageError, intFlag, listFlag, numberFlag } from '../src/common/cli/flags.js';
import { runMain, UsageError } from '../src/common/cli/run-main.js';
import { findPackageRoot, resolveWorkerScript } from '../src/common/fs/worker-script.js';
import { TraceFile, type TraceEvent } from '../src/common/io/timeline.js';
import { MODEL_NAMES, type ModelName } from '../src/common/model/spec.js';
import { WIRE_NAMES, type WireName } from '../src/common/allreduce/wire-format.js';
import { DEFAULT_BUCKET_CAP_MB } from '../src/common/allreduce/buckets.js';
import { median } from './timing-stats.js';
import type { RankCommand, RankMessage, RankPeer, RankTask } from './bench-step-rank.js';

const SCRIPT = fileURLToPath(import.meta.url);

export type LinkName = 'loopback' | `netns-${string}`;
export type RankMode = 'threads' | 'processes';

export interface StepRow {
  workers: number;
  link: LinkName;
  ranks: RankMode;
  wire: WireName;
  compressed: boolean;
  overlap: boolean;
  computeMs: number;
  stepMs: number;
  exposedCommMs: number;
  efficiency: number;
  stepTimes: number[];
}

type Config = Omit<RankTask, 'rank' | 'worldSize' | 'tag' | 'host' | 'wire' | 'overlap' | 'timeline'>;

/**
 * How the ranks run: threads of this process on loopback, or child processes
 * (each with an IPC channel), on loopback or, with `netns`, rank r in
 * namespace `namespaces[r]` listening on `hosts[r]`.
 */
export type RankPlacement =
  | { mode: 'threads' }
  | { mode: 'processes'; netns?: { namespaces: string[]; hosts: string[] } };

/** A started rank, thread or process: `ended` is called once it is gone (with anything it sent read). */
interface RankHandle {
  events: EventEmitter;
  ended: (cb: (code: number | null) => void) => void;
  tell: (m: RankPeer) => void;
  stop: () => Promise<unknown>;
}

function startRank(script: string, task: RankTask, placement: RankPlacement): RankHandle {
  if (placement.mode === 'threads') {
    const w = new Worker(script, { workerData: task });
    return { events: w, ended: (cb) => w.once('exit', cb), tell: (m) => w.postMessage(m), stop: () => w.terminate() };
  }
  const ns = placement.netns?.namespaces[task.rank];
  const [cmd, args] = ns ? ['ip', ['netns', 'exec', ns, process.execPath, script]] : [process.execPath, [script]];
  // `ip netns exec` execs node in place: the IPC descriptor and pid carry over.
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const send = (m: RankCommand) => {
    if (child.connected) child.send(m);
  };
  send({ task });
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  return {
    events: child,
    // 'close': exited and its IPC channel drained, so its last message has been seen.
    ended: (cb) => child.once('close', (code) => cb(code)),
    tell: send,
    stop: () => new Promise<void>((done) => {
      if (gone() || child.pid === undefined) return done();
      child.once('exit', () => done());
      child.kill('SIGKILL');
    }),
  };
}

/** One configuration: `workers` ranks wired into a ring; rank 0's times and everyone's trace events. */
export async function measureStep(
  workers: number, wire: WireName, overlap: boolean, cfg: Config, timeline: boolean,
  placement: RankPlacement = { mode: 'threads' },
): Promise<{ stepTimes: number[]; exposed: number[]; events: TraceEvent[] }> {
  const script = resolveWorkerScript(import.meta.url, './bench-step-rank.js');
  const tag = randomInt(1, 0xffff_ffff);
  const netns = placement.mode === 'processes' ? placement.netns : undefined;
  if (netns && netns.namespaces.length < workers) throw new Error(`${workers} ranks need ${workers} namespaces, got ${netns.namespaces.length}`);
  const ranks = Array.from({ length: workers }, (_, rank) => startRank(script,
    { ...cfg, rank, worldSize: workers, tag, host: netns?.hosts[rank], wire, overlap, timeline } satisfies RankTask, placement));
  const addresses: unknown[] = new Array(workers);
  let listening = 0;
  const results = await Promise.all(ranks.map((h, rank) => new Promise<Extract<RankMessage, { kind: 'result' }>>((done, fail) => {
    h.events.on('message', (m: RankMessage) => {
      if (m.kind === 'address') {
        addresses[rank] = m.address;
        // Once every rank listens, each is told its predecessor's address.
        if (++listening === workers) ranks.forEach((t, r) => t.tell({ peer: addresses[(r - 1 + workers) % workers] as RankPeer['peer'] }));
      } else if (m.kind === 'error') {
        fail(new Error(`rank ${m.rank}: ${m.message}`));
      } else {
        done(m);
      }
    });
    h.events.once('error', fail);
    h.ended((code) => fail(new Error(`rank ${rank} exited (code ${code}) without a result`)));
  }))).finally(() => Promise.all(ranks.map((h) => h.stop())));
  return { stepTimes: results[0].stepMs, exposed: results[0].exposedMs, events: results.flatMap((r) => r.events) };
}

/** Why `--link netns` cannot run here, or null. */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return `--link netns needs Linux network namespaces (this is ${process.platform}); use --link loopback`;
  if (process.getuid?.() !== 0) return '--link netns needs root for ip netns and tc: run it as root (sudo), or use --link loopback';
  for (const tool of ['ip', 'tc']) {
    if (spawnSync(tool, ['-V'], { stdio: 'ignore' }).error) {
      return `--link netns needs \`${tool}\`, which is not installed: install iproute2 (apt-get install iproute2), or use --link loopback`;
    }
  }
  return null;
}

/**
 * N emulated hosts (scripts/netns-links.sh): namespaces tfddp-h1..hN at
 * 10.77.0.1..N, each link shaped to `rate` and `delay`. `down` is idempotent
 * and also runs on exit, SIGINT and SIGTERM.
 */
export class NetnsLinks {
  readonly namespaces: string[];
  readonly hosts: string[];
  /** The delay applied: `delay`, or 'none' where the kernel has no netem (rate only). */
  readonly delayApplied: string;
  private up = true;
  private readonly onExit = () => this.down();
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.down();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };

  private constructor(private readonly script: string, private readonly names: string[], rate: string, delay: string) {
    process.once('exit', this.onExit);
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
    try {
      const out = execFileSync('bash', [script, 'up', rate, delay, ...names], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
      this.delayApplied = out.trim().split('\n').pop() ?? 'none';
    } catch (err) {
      this.down();
      throw new Error(`netns setup failed (scripts/netns-links.sh up): ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    }
    this.namespaces = names.map((n) => `tfddp-${n}`);
    this.hosts = names.map((_, i) => `10.77.0.${i + 1}`);
  }

  static create(hosts: number, rate: string, delay: string): NetnsLinks {
    const why = netnsUnavailable();
    if (why) throw new UsageError(why);
    const root = findPackageRoot(dirname(SCRIPT));
    const script = root && join(root, 'scripts', 'netns-links.sh');
    if (!script || !existsSync(script)) throw new Error(`scripts/netns-links.sh not found above ${dirname(SCRIPT)}`);
    return new NetnsLinks(script, Array.from({ length: hosts }, (_, i) => `h${i + 1}`), rate, delay);
  }

  down(): void {
    if (!this.up) return;
    this.up = false;
    process.off('exit', this.onExit);
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    spawnSync('bash', [this.script, 'down', ...this.names], { stdio: 'inherit' });
  }
}

/** tc's rate (10gbit, 100mbit, ...) and delay (0.05ms, 100us, ...), checked before they reach tc. */
const tcValue = (pattern: RegExp, example: string) => (value: string): string => {
  if (!pattern.test(value)) throw new InvalidArgumentError(`expected a tc value like ${example}, got "${value}"`);
  return value;
};
const RATE = /^\d+(\.\d+)?(bit|kbit|mbit|gbit|tbit)$/i;
const DELAY = /^\d+(\.\d+)?(us|ms|s)$/;

interface Options {
  workers: number[];
  wire: WireName[];
  overlap: string[];
  link: ('loopback' | 'netns')[];
  rate: string;
  delay: string;
  ranks: RankMode;
  computeMs: number;
  model: ModelName;
  width: number;
  batch: number;
  bucketMb: number;
  steps: number;
  warmup: number;
  timeline?: string;
  out: string;
}

const program = exitOnUsageError(new Command('bench-step')
  .description('Step time and scaling efficiency of the real step machinery (buckets, communication thread, WebSocket ring, ' +
    'bucketed SGD) under emulated GPU compute, on loopback or emulated hosts (network namespaces, root); ' +
    'rows {workers, link, ranks, wire, compressed, overlap, computeMs, stepMs, exposedCommMs, efficiency}')
  .addOption(new Option('--workers <list>', 'rank counts (N=1 is the efficiency baseline and always runs)').argParser(listFlag(intFlag(1))).default([1, 2, 4], '1,2,4'))
  .addOption(new Option('--wire <list>', 'wire formats of the ring (bf16 and fp16 are compressed)')
    .argParser(listFlag(choiceFlag(WIRE_NAMES))).default(['fp32', 'bf16'], 'fp32,bf16'))
  .addOption(new Option('--overlap <list>', 'on: buckets reduced during backward; off: one all-reduce after it')
    .argParser(listFlag(choiceFlag(['on', 'off'] as const))).default(['on', 'off'], 'on,off'))
  .addOption(new Option('--link <list>', 'loopback: the ring on 127.0.0.1; netns: one network namespace per rank, ' +
    'links shaped to --rate and --delay (needs root and iproute2)').argParser(listFlag(choiceFlag(['loopback', 'netns'] as const), 'loopback,netns'))
    .default(['loopback'], 'loopback'))
  .addOption(new Option('--rate <rate>', 'netns: each host\'s link rate, as tc writes it').argParser(tcValue(RATE, '10gbit')).default('10gbit', '10gbit'))
  .addOption(new Option('--delay <delay>', 'netns: each host\'s link delay (netem; not applied where the kernel has no netem)')
    .argParser(tcValue(DELAY, '0.05ms')).default('0.05ms', '0.05ms'))
  .addOption(new Option('--ranks <mode>', 'loopback: ranks as threads of this process or as child processes (netns ranks are always processes)')
    .choices(['threads', 'processes']).default('threads'))
  .addOption(new Option('--compute-ms <ms>', 'emulated forward+backward per step (a GPU\'s, for ResNet50 at batch 32)').argParser(numberFlag(0, true)).default(150))
  .addOption(new Option('--model <name>', 'model whose parameters and FLOPs are used').choices([...MODEL_NAMES]).default('resnet50'))
  .addOption(new Option('--width <n>', 'base width').argParser(intFlag(1)).default(64))
  .addOption(new Option('--batch <n>', 'per-rank batch (scales the FLOPs only)').argParser(intFlag(1)).default(32))
  .addOption(new Option('--bucket-mb <mb>', 'bucket cap (the first bucket is 1 MB)').argParser(numberFlag(0, true)).default(DEFAULT_BUCKET_CAP_MB))
  .addOption(new Option('--steps <n>', 'timed steps per configuration').argParser(intFlag(1)).default(8))
  .addOption(new Option('--warmup <n>', 'untimed steps before them').argParser(intFlag(0)).default(2))
  .option('--timeline <file>', 'also write a Chrome trace of the largest overlapped configuration (first wire, first link)')
  .option('--out <file>', 'JSON report', 'runs/bench-step.json'));

if (process.argv[1] && resolve(process.argv[1]) === SCRIPT) {
  await runMain('bench-step', async () => {
    const opts = program.parse().opts<Options>();
    const links = [...new Set(opts.link)];
    const largest = Math.max(...opts.workers);
    // Refused before any measurement: not root, no iproute2.
    const why = links.includes('netns') ? netnsUnavailable() : null;
    if (why) throw new UsageError(why);
    const netns = links.includes('netns') && largest > 1 ? NetnsLinks.create(largest, opts.rate, opts.delay) : null;
    if (netns) {
      console.log(`netns: ${largest} hosts on 10.77.0.0/24, links ${opts.rate}, delay ${netns.delayApplied}` +
        (netns.delayApplied === 'none' ? ` (no netem in this kernel: --delay ${opts.delay} NOT applied)` : ''));
    }
    try {
      await bench(opts, links, netns);
    } finally {
      netns?.down();
    }
  });
}

async function bench(opts: Options, links: ('loopback' | 'netns')[], netns: NetnsLinks | null): Promise<void> {
  const cfg: Config = { model: opts.model, width: opts.width, batch: opts.batch, computeMs: opts.computeMs, bucketMb: opts.bucketMb, steps: opts.steps, warmup: opts.warmup };
  const rows: StepRow[] = [];
  const add = (workers: number, link: LinkName, ranks: RankMode, wire: WireName, overlap: boolean, stepTimes: number[], exposed: number[], base: number): StepRow => {
    const stepMs = median(stepTimes);
    const row: StepRow = {
      workers, link, ranks, wire, compressed: wire !== 'fp32', overlap, computeMs: opts.computeMs,
      stepMs, exposedCommMs: median(exposed), efficiency: base / stepMs, stepTimes,
    };
    rows.push(row);
    console.log(`N=${workers} ${link} ${wire}${row.compressed ? ' (compressed)' : ''} overlap ${overlap ? 'on ' : 'off'}: step ${stepMs.toFixed(1)} ms, ` +
      `exposed communication ${row.exposedCommMs.toFixed(1)} ms, efficiency ${(100 * row.efficiency).toFixed(1)}%`);
    return row;
  };
  // N=1 has no communication: one baseline, in this process, for every link.
  const single = await measureStep(1, 'fp32', false, cfg, false);
  const base = add(1, 'loopback', 'threads', 'fp32', false, single.stepTimes, single.exposed, median(single.stepTimes)).stepMs;
  const largest = Math.max(...opts.workers);
  let trace: TraceEvent[] = [];
  for (const link of links) {
    if (link === 'netns' && !netns) continue; // N=1 only
    const placement: RankPlacement = link === 'netns'
      ? { mode: 'processes', netns: { namespaces: netns!.namespaces, hosts: netns!.hosts } }
      : opts.ranks === 'processes' ? { mode: 'processes' } : { mode: 'threads' };
    const name: LinkName = link === 'netns' ? `netns-${opts.rate}` : 'loopback';
    for (const workers of opts.workers.filter((w) => w > 1)) {
      for (const wire of opts.wire) {
        for (const overlap of opts.overlap.map((o) => o === 'on')) {
          const traced = Boolean(opts.timeline) && overlap && workers === largest && wire === opts.wire[0] && link === links[0];
          const r = await measureStep(workers, wire, overlap, cfg, traced, placement);
          if (traced) trace = r.events;
          add(workers, name, placement.mode, wire, overlap, r.stepTimes, r.exposed, base);
        }
      }
    }
  }
  mkdirSync(dirname(opts.out), { recursive: true });
  const note = [
    ...(links.includes('loopback') ? [`loopback ranks are ${opts.ranks === 'threads' ? 'threads of one process' : 'processes'} on this machine`] : []),
    ...(netns ? [`netns ranks are processes, one per namespace, links ${opts.rate} (delay ${netns.delayApplied === 'none' ? 'not applied: no netem' : netns.delayApplied})`] : []),
    'N ranks share this machine\'s cores',
  ].join('; ');
  writeFileSync(opts.out, JSON.stringify({
    when: new Date().toISOString(), model: opts.model, width: opts.width, batch: opts.batch, bucketMb: opts.bucketMb, note,
    ...(netns ? { netns: { rate: opts.rate, delay: opts.delay, delayApplied: netns.delayApplied !== 'none' } } : {}),
    rows,
  }, null, 2));
  console.log(`wrote ${opts.out}`);
  if (opts.timeline && trace.length > 0) {
    const file = new TraceFile(opts.timeline);
    for (let r = 0; r < largest; r++) file.addRank(r);
    file.add(trace);
    console.log(`wrote ${await file.flush()}`);
  }
}
