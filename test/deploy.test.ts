// deploy/: the Kubernetes manifest, the Slurm script and the Dockerfile agree
// with each other and with the real command lines. There is no cluster here,
// so besides the static checks the manifests' and the Slurm script's commands
// run on this machine: the same wrapper scripts and flags, with a tiny
// synthetic run on the wasm backend appended (later flags win), fake srun and
// scontrol, and 127.0.0.1 for the pod IP and the Service.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const read = (file: string) => fs.readFileSync(path.join(root, file), 'utf8');
const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string>; optionalDependencies: Record<string, string> };

/** A tiny run: flags appended to the coordinator's own, which they override. */
const TINY_RUN = [
  '--dataset', 'synthetic', '--model', 'resnet18', '--width', '4', '--epochs', '1', '--batch-size', '32',
  '--train-limit', '64', '--test-limit', '32', '--backend', 'wasm', '--no-plots',
];

// ---------------------------------------------------------------------------
// The real CLIs

/** Long flags that `node dist/<script> --help` lists. */
function helpFlags(script: string): Set<string> {
  const r = spawnSync(process.execPath, [path.join(root, script), '--help'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  const flags = new Set([...r.stdout.matchAll(/^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]));
  expect(flags.size).toBeGreaterThan(3);
  return flags;
}

let cliFlags: Record<'coordinator' | 'worker', Set<string>>;

/** The newest modification time (ms) of a .ts file under `dir`. */
function newestSourceMs(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

beforeAll(() => {
  // The checks below ask the compiled CLIs which flags they accept, so the build must be the source's.
  // npm test builds first (pretest); only a build older than the source is redone here, since a
  // rebuild rewrites dist/ under the test files running beside this one.
  const built = path.join(root, pkg.bin.coordinator);
  if (!fs.existsSync(built) || fs.statSync(built).mtimeMs < newestSourceMs(path.join(root, 'src'))) {
    const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, encoding: 'utf8', timeout: 170_000 });
    if (tsc.status !== 0) throw new Error(`npx tsc -p tsconfig.json failed:\n${tsc.stdout}${tsc.stderr}`);
  }
  cliFlags = {
    coordinator: helpFlags(pkg.bin.coordinator),
    worker: helpFlags(pkg.bin.worker),
  };
});

/** Flags in an argument list (`--flag value` or `--flag=value`). */
const flagsIn = (args: string[]) => args.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]);

function expectKnownFlags(cli: 'coordinator' | 'worker', args: string[]): void {
  const flags = flagsIn(args);
  expect(flags.length).toBeGreaterThan(0);
  expect(flags.filter((f) => !cliFlags[cli].has(f)), `${cli} flags unknown to \`${cli} --help\``).toEqual([]);
}

function flagValue(args: string[], flag: string): string | undefined {
  const i = args.lastIndexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

function bashSyntax(script: string, label: string): void {
  const r = spawnSync('bash', ['-n'], { input: script, encoding: 'utf8' });
  expect(r.status, `${label}: ${r.stderr}`).toBe(0);
}

// ---------------------------------------------------------------------------
// Processes for the local runs

const children = new Set<ChildProcess>();
const tmpDirs: string[] = [];

afterAll(() => {
  for (const child of children) if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
});

function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-deploy-'));
  tmpDirs.push(dir);
  return dir;
}

interface Exit {
  code: number | null;
  output: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<Exit> {
  const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, output });
    });
  });
}

/** A port that was free a moment ago. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `coordinator` and `worker` on PATH, as the image links them. */
function binDir(): string {
  const dir = tmpDir();
  for (const name of ['coordinator', 'worker'] as const) {
    fs.writeFileSync(path.join(dir, name), `#!/bin/sh\nexec "${process.execPath}" "${path.join(root, pkg.bin[name])}" "$@"\n`, { mode: 0o755 });
  }
  return dir;
}

// ---------------------------------------------------------------------------
// deploy/kubernetes.yaml

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args: string[];
  env: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  resources?: { limits?: Record<string, string | number> };
}
interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: { containers: Container[]; restartPolicy?: string };
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [key: string]: any };

function manifest(): Doc[] {
  const docs = parseAllDocuments(read('deploy/kubernetes.yaml'));
  expect(Array.isArray(docs), 'deploy/kubernetes.yaml is empty').toBe(true);
  const list = docs as Exclude<typeof docs, { empty: true }>;
  for (const doc of list) {
    expect(doc.errors.map(String)).toEqual([]);
    expect(doc.warnings.map(String)).toEqual([]);
  }
  return list.map((d) => d.toJS() as Doc | null).filter((d): d is Doc => d !== null);
}

const docs = manifest();
const ofKind = (kind: string) => {
  const found = docs.filter((d) => d.kind === kind);
  expect(found, `one ${kind}`).toHaveLength(1);
  return found[0];
};
const secret = ofKind('Secret');
const deployment = ofKind('Deployment');
const service = ofKind('Service');
const job = ofKind('Job');
const onlyContainer = (template: PodTemplate) => {
  expect(template.spec.containers).toHaveLength(1);
  return template.spec.containers[0];
};
const coordinator = onlyContainer(deployment.spec.template);
const worker = onlyContainer(job.spec.template);

/**
 * The CLI invocation in a container's args: either the bin and its flags, or
 * `bash -c SCRIPT bin flags...` (the script ends with `exec "$0" "$@"`).
 */
function invocation(c: Container): { bin: string; flags: string[]; wrapper: string | null } {
  // No `command`: it would replace the image's ENTRYPOINT (tini).
  expect(c.command).toBeUndefined();
  if (c.args[0] === 'bash') {
    expect(c.args[1]).toBe('-c');
    expect(c.args[2]).toMatch(/exec "\$0" "\$@"\s*$/);
    return { bin: c.args[3], flags: c.args.slice(4), wrapper: c.args[2] };
  }
  return { bin: c.args[0], flags: c.args.slice(1), wrapper: null };
}
const coordinatorCall = invocation(coordinator);
const workerCall = invocation(worker);

const envOf = (c: Container, name: string) => {
  const found = c.env.filter((e) => e.name === name);
  expect(found, `${c.name}: env ${name}`).toHaveLength(1);
  return found[0];
};

/** Kubelet's expansion of $(VAR) in args: defined variables only; $$ is a literal $. */
function expandArgs(args: string[], env: Record<string, string>): string[] {
  return args.map((a) => a.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name?: string) => (m === '$$' ? '$' : name! in env ? env[name!] : m)));
}

/** The container's environment as this test can provide it (secrets from the manifest's Secret). */
function containerEnv(c: Container, overrides: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.secretKeyRef) env[e.name] = secret.stringData[e.valueFrom.secretKeyRef.key];
    else if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = '127.0.0.1';
    else throw new Error(`${c.name}: env ${e.name} has a source this test does not know`);
  }
  return { ...env, ...overrides };
}

describe('deploy/kubernetes.yaml', () => {
  test('parses, and holds a Secret, a Deployment, a Service and an Indexed Job', () => {
    expect(docs.map((d) => d.kind)).toEqual(expect.arrayContaining(['Secret', 'Deployment', 'Service', 'Job']));
    for (const d of docs) {
      expect(d.apiVersion, d.kind).toMatch(/^(v1|apps\/v1|batch\/v1)$/);
      expect(d.metadata.name, d.kind).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      expect(d.metadata.labels?.['app.kubernetes.io/name'], d.kind).toBe('tfjs-ddp');
    }
    expect(job.spec.completionMode).toBe('Indexed');
    expect(['OnFailure', 'Never']).toContain(job.spec.template.spec.restartPolicy);
    // One coordinator at a time: two would write the same --out.
    expect(deployment.spec.replicas).toBe(1);
    expect(deployment.spec.strategy?.type).toBe('Recreate');
  });

  test('completions = parallelism = the coordinator\'s --workers, all of them remote', () => {
    const n = Number(flagValue(coordinatorCall.flags, '--workers'));
    expect(n).toBeGreaterThan(1);
    expect(job.spec.completions).toBe(n);
    expect(job.spec.parallelism).toBe(n);
    expect(flagValue(coordinatorCall.flags, '--local-workers')).toBe('0');
    expect(flagValue(coordinatorCall.flags, '--host')).toBe('0.0.0.0');
  });

  test('each worker has one GPU, the tensorflow backend and a ring endpoint on its pod IP', () => {
    expect(Number(worker.resources?.limits?.['nvidia.com/gpu'])).toBe(1);
    expect(coordinator.resources?.limits?.['nvidia.com/gpu']).toBeUndefined();
    expect(flagValue(workerCall.flags, '--backend')).toBe('tensorflow');
    const podIp = envOf(worker, 'POD_IP');
    expect(podIp.valueFrom?.fieldRef?.fieldPath).toBe('status.podIP');
    expect(flagValue(workerCall.flags, '--ring-host')).toBe('$(POD_IP)');
    // A fixed port (not 0, a random one), since the container has to declare it.
    const ringPort = Number(flagValue(workerCall.flags, '--ring-port'));
    expect(Number.isInteger(ringPort) && ringPort >= 1 && ringPort <= 65535, `--ring-port ${ringPort}`).toBe(true);
    expect(worker.ports?.map((p) => p.containerPort)).toContain(ringPort);
  });

  test('both containers take TFJS_DDP_TOKEN from the Secret, never from a flag', () => {
    for (const c of [coordinator, worker]) {
      const ref = envOf(c, 'TFJS_DDP_TOKEN').valueFrom?.secretKeyRef;
      expect(ref?.name, c.name).toBe(secret.metadata.name);
      expect(Object.keys({ ...secret.stringData, ...secret.data }), c.name).toContain(ref?.key);
    }
    expect(flagsIn(coordinatorCall.flags)).not.toContain('--token');
    expect(flagsIn(workerCall.flags)).not.toContain('--token');
  });

  test('the workers reach the coordinator through the Service, on the coordinator\'s --port', () => {
    const port = Number(flagValue(coordinatorCall.flags, '--port'));
    expect(service.spec.ports).toHaveLength(1);
    const svcPort = service.spec.ports[0];
    expect(svcPort.port).toBe(port);
    const target = coordinator.ports?.find((p) => p.name === svcPort.targetPort || p.containerPort === svcPort.targetPort);
    expect(target?.containerPort).toBe(port);
    expect(envOf(worker, 'TFJS_DDP_COORDINATOR').value).toBe(`${service.metadata.name}:${port}`);
    // The selector picks the coordinator pod and not the workers.
    const matches = (labels: Record<string, string>) => Object.entries(service.spec.selector as Record<string, string>).every(([k, v]) => labels[k] === v);
    expect(matches(deployment.spec.template.metadata.labels)).toBe(true);
    expect(matches(job.spec.template.metadata.labels)).toBe(false);
    expect(deployment.spec.template.metadata.labels).toEqual(expect.objectContaining(deployment.spec.selector.matchLabels));
  });

  test('the commands are the package\'s bins, with flags the CLIs accept, in one image', () => {
    expect(coordinatorCall.bin).toBe('coordinator');
    expect(workerCall.bin).toBe('worker');
    expectKnownFlags('coordinator', coordinatorCall.flags);
    expectKnownFlags('worker', workerCall.flags);
    expect(coordinator.image).toBe(worker.image);
    expect(read('deploy/Dockerfile')).toContain(`-t ${coordinator.image} .`);
  });

  test('the wrapper scripts are valid bash', () => {
    for (const call of [coordinatorCall, workerCall]) if (call.wrapper) bashSyntax(call.wrapper, call.bin);
  });

  test('the containers\' commands run a training together (4 workers, tiny, on this machine)', async () => {
    const dir = tmpDir();
    const port = await freePort();
    const bin = binDir();
    const base = { PATH: `${bin}:${process.env.PATH}`, HOME: dir };
    const coordEnv = containerEnv(coordinator, { RUN_DIR: path.join(dir, 'out') });
    const workerEnv = containerEnv(worker, { TFJS_DDP_COORDINATOR: `127.0.0.1:${port}` });
    // All workers share one host here: any free ring port instead of the fixed one.
    const workerArgs = [...expandArgs(worker.args, workerEnv), '--backend', 'wasm', '--ring-port', '0', '--cache-dir', path.join(dir, 'cache')];
    const startWorkers = () => Array.from({ length: job.spec.parallelism as number }, () => run(workerArgs[0], workerArgs.slice(1), { ...base, ...workerEnv }));
    const startCoordinator = (extra: string[]) => {
      const args = [...expandArgs(coordinator.args, coordEnv), '--port', String(port), '--data-dir', path.join(dir, 'data'), ...TINY_RUN, ...extra];
      return run(args[0], args.slice(1), { ...base, ...coordEnv });
    };

    // The workers start first and wait for the coordinator (the Job and the Deployment start in any order).
    const workers = startWorkers();
    const first = await startCoordinator([]);
    const firstWorkers = await Promise.all(workers);
    expect(first.output).toMatch(/done: 2 steps on 4 workers/);
    expect(first.code, first.output).toBe(0);
    for (const w of firstWorkers) expect(w.code, w.output).toBe(0);

    // A restarted coordinator finds the checkpoint and resumes instead of starting over.
    const workers2 = startWorkers();
    const second = await startCoordinator(['--epochs', '2']);
    for (const w of await Promise.all(workers2)) expect(w.code, w.output).toBe(0);
    expect(second.code, second.output).toBe(0);
    expect(second.output).toMatch(/resuming/);
    expect(second.output).toMatch(/resumed from .*ckpt-e0001/);
    const metrics = fs.readFileSync(path.join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { epoch: number; workers: number });
    expect(metrics.map((m) => [m.epoch, m.workers])).toEqual([[1, 4], [2, 4]]);
  });
});

// ---------------------------------------------------------------------------
// deploy/slurm.sbatch

/** srun options the script may use; the fake srun below implements exactly these. */
const SRUN_OPTIONS = ['--overlap', '--nodes', '--ntasks', '--ntasks-per-node', '--nodelist', '--kill-on-bad-exit', '--output'];

const FAKE_SRUN = `#!/usr/bin/env bash
# srun stand-in: runs the step's tasks on this machine, numbering them as srun does.
nodes=1 ntasks= per_node= output=
while [[ $# -gt 0 ]]; do
  case $1 in
    --overlap) ;;
    --nodes=*) nodes=\${1#*=} ;;
    --ntasks=*) ntasks=\${1#*=} ;;
    --ntasks-per-node=*) per_node=\${1#*=} ;;
    --nodelist=* | --kill-on-bad-exit=*) ;;
    --output=*) output=\${1#*=} ;;
    -*) echo "fake srun: unknown option $1" >&2; exit 64 ;;
    *) break ;;
  esac
  shift
done
total=\${ntasks:-$((nodes * \${per_node:-1}))}
per=\${per_node:-$total}
pids=()
for ((t = 0; t < total; t++)); do
  export SLURM_PROCID=$t SLURM_LOCALID=$((t % per)) SLURM_NODEID=$((t / per))
  if [[ -n $output ]]; then "$@" > "\${output//%t/$t}" 2>&1 & else "$@" & fi
  pids+=($!)
done
status=0
for p in "\${pids[@]}"; do wait "$p" || status=$?; done
exit $status
`;

const FAKE_SCONTROL = `#!/usr/bin/env bash
[[ $1 == show && $2 == hostnames ]] || { echo "fake scontrol: $*" >&2; exit 64; }
tr , '\\n' <<< "$3"
`;

describe('deploy/slurm.sbatch', () => {
  const script = read('deploy/slurm.sbatch');
  const logical = script.replace(/\\\n/g, ' ');

  test('is valid bash, and so is the per-task script it hands to srun', () => {
    const r = spawnSync('bash', ['-n', path.join(root, 'deploy/slurm.sbatch')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const inner = [...script.matchAll(/bash -c '([^']*)'/g)].map((m) => m[1]);
    expect(inner).toHaveLength(1);
    bashSyntax(inner[0], 'worker task');
  });

  test('asks for one task per GPU and pins each task to its GPU and ring port', () => {
    const sbatch = (name: string) => new RegExp(`^#SBATCH --${name}=(\\d+)$`, 'm').exec(script)?.[1];
    // Whole numbers (the pattern), for a data-parallel job of more than one worker (NaN, when one is missing, fails too).
    const [nodes, tasks] = ['nodes', 'ntasks-per-node'].map((name) => Number(sbatch(name)));
    expect(nodes * tasks).toBeGreaterThan(1);
    expect(sbatch('gpus-per-node')).toBe(String(tasks));
    expect(script).toContain('scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1');
    expect(script).toMatch(/CUDA_VISIBLE_DEVICES=\$SLURM_LOCALID/);
    expect(script).toContain('--ring-port "$((RING_PORT_BASE + SLURM_LOCALID))"');
    expect(script).toContain('RING_PORT_BASE=${RING_PORT_BASE:-29501}');
    expect(script).toMatch(/export TFJS_DDP_TOKEN/);
  });

  test('its srun lines use only real srun options and real coordinator/worker flags', () => {
    const sruns = logical.split('\n').filter((l) => /^\s*srun /.test(l));
    expect(sruns).toHaveLength(2);
    for (const line of sruns) {
      const tokens = line.trim().split(/\s+/).slice(1);
      const options = tokens.slice(0, tokens.findIndex((t) => !t.startsWith('-')));
      expect(options.map((o) => o.split('=')[0]).filter((o) => !SRUN_OPTIONS.includes(o)), line).toEqual([]);
    }
    for (const cli of ['coordinator', 'worker'] as const) {
      const calls = [...logical.matchAll(new RegExp(`${pkg.bin[cli].replace(/\./g, '\\.')}"?([^\\n&]*)`, 'g'))].map((m) => m[1]);
      expect(calls, cli).toHaveLength(1);
      expectKnownFlags(cli, calls[0].trim().split(/\s+/));
    }
  });

  test('runs a training with fake srun (1 node x 2 tasks), then resumes it', async () => {
    const dir = tmpDir();
    const fake = path.join(dir, 'bin');
    fs.mkdirSync(fake);
    fs.writeFileSync(path.join(fake, 'srun'), FAKE_SRUN, { mode: 0o755 });
    fs.writeFileSync(path.join(fake, 'scontrol'), FAKE_SCONTROL, { mode: 0o755 });
    const out = path.join(dir, 'out');
    const env = {
      PATH: `${fake}:${process.env.PATH}`, HOME: dir,
      SLURM_SUBMIT_DIR: root, SLURM_JOB_ID: '42', SLURM_JOB_NUM_NODES: '1', SLURM_NTASKS_PER_NODE: '2', SLURM_JOB_NODELIST: '127.0.0.1',
      OUT: out, PORT: String(await freePort()), BACKEND: 'wasm', TFJS_DDP_CACHE: path.join(dir, 'cache'),
    };
    const first = await run('bash', [path.join(root, 'deploy/slurm.sbatch'), ...TINY_RUN], env);
    expect(first.code, first.output).toBe(0);
    expect(first.output).toMatch(/done: 2 steps on 2 workers/);
    const logs = [0, 1].map((t) => fs.readFileSync(path.join(out, 'logs', `worker-${t}.log`), 'utf8'));
    expect(logs.join('\n')).toMatch(/joined as rank 0 of 2/);
    expect(logs.join('\n')).toMatch(/joined as rank 1 of 2/);
    expect(first.output).toMatch(/CUDA_VISIBLE_DEVICES=0/);
    expect(first.output).toMatch(/CUDA_VISIBLE_DEVICES=1/);

    const second = await run('bash', [path.join(root, 'deploy/slurm.sbatch'), ...TINY_RUN, '--epochs', '2'], env);
    expect(second.code, second.output).toBe(0);
    expect(second.output).toMatch(/checkpoints found in .*: resuming/);
    expect(second.output).toMatch(/done: 4 steps on 2 workers/);
  });
});

// ---------------------------------------------------------------------------
// deploy/Dockerfile

describe('deploy/Dockerfile', () => {
  const dockerfile = read('deploy/Dockerfile');
  const instructions = dockerfile.replace(/\\\n/g, ' ').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));

  test('the final image is an nvidia/cuda runtime image with CUDA 11 and cuDNN 8', () => {
    const stages = new Map<string, string>();
    let last = '';
    for (const line of instructions) {
      const m = /^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$/i.exec(line);
      if (!m) continue;
      last = stages.get(m[1]) ?? m[1];
      if (m[2]) stages.set(m[2], last);
    }
    // Every stage, the build stage included, sits on the same base, so native addons match its glibc.
    expect(new Set(stages.values()).size).toBe(1);
    expect(last).toMatch(/^nvidia\/cuda:11\.\d+(\.\d+)?-cudnn8-runtime-ubuntu\d/);
  });

  const runs = instructions.filter((l) => /^RUN\s/.test(l));
  /** The index in `instructions` of the one RUN line matching `re`. */
  const runIndex = (re: RegExp) => {
    const found = instructions.flatMap((l, i) => (/^RUN\s/.test(l) && re.test(l) ? [i] : []));
    expect(found, String(re)).toHaveLength(1);
    return found[0];
  };
  const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { version?: string; dev?: boolean; optional?: boolean; hasInstallScript?: boolean }> };

  test('installs everything from the lockfile without install scripts, then builds with tsc and drops the dev dependencies', () => {
    const ci = runIndex(/\bnpm ci --ignore-scripts\b/);
    // --omit=optional would also drop the platform packages of the native dependencies (@napi-rs/canvas: the plots).
    expect(lock.packages['node_modules/@napi-rs/canvas-linux-x64-gnu']?.optional).toBe(true);
    expect(runs.filter((l) => /--omit=optional|--no-optional/.test(l))).toEqual([]);
    const tsc = runIndex(/\bnpx tsc -p tsconfig\.json/);
    const prune = runIndex(/\bnpm prune --omit=dev\b/);
    expect(ci).toBeLessThanOrEqual(tsc);
    expect(tsc).toBeLessThanOrEqual(prune);
  });

  test('runs the install script of every production package that has one, except the CPU TensorFlow package, which it removes', () => {
    const rebuilt = new Set(runs.flatMap((l) => [...l.matchAll(/\bnpm rebuild ((?:[@\w./-]+ ?)+)/g)].flatMap((m) => m[1].trim().split(/\s+/))));
    const removed = new Set(runs.flatMap((l) => [...l.matchAll(/\brm -rf node_modules\/([@\w./-]+)/g)].map((m) => m[1])));
    // core-js's postinstall only prints a banner (it is wrapped in try/catch).
    const needless = new Set(['core-js']);
    const scripted = Object.entries(lock.packages)
      .filter(([key, p]) => key.startsWith('node_modules/') && p.hasInstallScript && !p.dev)
      .map(([key]) => key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length));
    expect(scripted).toEqual(expect.arrayContaining(['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']));
    expect(scripted.filter((name) => !rebuilt.has(name) && !removed.has(name) && !needless.has(name))).toEqual([]);
    expect(removed).toEqual(new Set(['@tensorflow/tfjs-node']));
    expect(rebuilt.has('@tensorflow/tfjs-node')).toBe(false);
    // npm prune would put the removed package back, so the removal comes after the prune.
    const prune = runIndex(/\bnpm prune --omit=dev\b/);
    const rm = runIndex(/\brm -rf node_modules\/@tensorflow\/tfjs-node(?=\s|$)/);
    if (rm === prune) expect(instructions[rm].indexOf('npm prune')).toBeLessThan(instructions[rm].indexOf('rm -rf node_modules/'));
    else expect(rm).toBeGreaterThan(prune);
  });

  test('installs @tensorflow/tfjs-node-gpu at the package\'s version on its own, with the mirror variable, and loads it', () => {
    const version = pkg.optionalDependencies['@tensorflow/tfjs-node-gpu'];
    expect(version).toMatch(/^\d+\.\d+\.\d+$/); // pinned: the lockfile's version is the one the docs name
    expect(lock.packages['node_modules/@tensorflow/tfjs-node-gpu']?.version).toBe(version);
    expect(dockerfile).toMatch(new RegExp(`^#.*tfjs-node-gpu ${version.replace(/\./g, '\\.')}\\b`, 'm'));
    const gpu = runIndex(/\bnpm rebuild @tensorflow\/tfjs-node-gpu\b/);
    // After everything that reifies the tree (npm ci, npm prune), so nothing undoes it.
    for (const re of [/\bnpm ci\b/, /\bnpm prune\b/, /\brm -rf node_modules\/@tensorflow\/tfjs-node(?=\s|$)/]) expect(runIndex(re), String(re)).toBeLessThan(gpu);
    expect(instructions[gpu]).not.toMatch(/\|\||; *true|--ignore-scripts/);
    // The mirror passes through as a build argument in the same stage, declared before the install.
    const lastFrom = Math.max(...instructions.flatMap((l, i) => (i < gpu && /^FROM\s/i.test(l) ? [i] : [])));
    const arg = instructions.findIndex((l) => /^ARG\s+TFJS_NODE_CDN_STORAGE\s*$/.test(l));
    expect(arg).toBeGreaterThan(lastFrom);
    expect(arg).toBeLessThan(gpu);
    expect(read('docs/DEPLOY.md')).toContain('TFJS_NODE_CDN_STORAGE');
  });

  test('the build-time check loads the GPU package and fails unless its backend is tensorflow', () => {
    const line = instructions[runIndex(/\bnpm rebuild @tensorflow\/tfjs-node-gpu\b/)];
    expect(line).toMatch(/npm rebuild @tensorflow\/tfjs-node-gpu\s*&&\s*node -e "/);
    const code = /node -e "([^"]*)"/.exec(line)![1];
    expect(code).toContain("require('@tensorflow/tfjs-node-gpu')");
    // Run it against stand-ins of the package: one on the tensorflow backend, one that fell back to another.
    const dir = tmpDir();
    const stub = (backend: string) => {
      const mod = path.join(dir, backend, 'node_modules', '@tensorflow', 'tfjs-node-gpu');
      fs.mkdirSync(mod, { recursive: true });
      fs.writeFileSync(path.join(mod, 'index.js'), `module.exports = { getBackend: () => '${backend}', version: { 'tfjs-node': '4.22.0' }, backend: () => ({ binding: { TF_Version: '2.9.1' } }) };\n`);
      return spawnSync(process.execPath, ['-e', code], { cwd: path.join(dir, backend), encoding: 'utf8' });
    };
    const ok = stub('tensorflow');
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/4\.22\.0.*tensorflow.*2\.9\.1/);
    expect(stub('cpu').status).not.toBe(0);
  });

  test('the image keeps the CUDA JIT cache in a mount point, as the manifest and the Slurm script do', () => {
    const env = Object.fromEntries(instructions.filter((l) => /^ENV\s/.test(l)).flatMap((l) => [...l.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1], m[2]])));
    expect(env.CUDA_CACHE_PATH).toMatch(/^\//);
    expect(Number(env.CUDA_CACHE_MAXSIZE)).toBeGreaterThanOrEqual(2 ** 30);
    expect(dockerfile).toMatch(new RegExp(`mkdir -p [^\\n]*${env.CUDA_CACHE_PATH}`));
    expect(dockerfile).toMatch(new RegExp(`chown ddp:ddp [^\\n]*${env.CUDA_CACHE_PATH}`));
    // Kubernetes: the same values, and a volume mounted there.
    expect(envOf(worker, 'CUDA_CACHE_PATH').value).toBe(env.CUDA_CACHE_PATH);
    expect(envOf(worker, 'CUDA_CACHE_MAXSIZE').value).toBe(env.CUDA_CACHE_MAXSIZE);
    const mounts = (job.spec.template.spec.containers[0].volumeMounts ?? []) as { name: string; mountPath: string }[];
    const mount = mounts.find((m) => m.mountPath === env.CUDA_CACHE_PATH);
    expect(mount, 'a volume on CUDA_CACHE_PATH').toBeDefined();
    expect((job.spec.template.spec.volumes as { name: string }[]).map((v) => v.name)).toContain(mount!.name);
    // Slurm: exported with defaults the caller can override.
    const sbatch = read('deploy/slurm.sbatch');
    expect(sbatch).toMatch(/^export CUDA_CACHE_PATH=\$\{CUDA_CACHE_PATH:-[^}]+\}$/m);
    expect(sbatch).toContain(`export CUDA_CACHE_MAXSIZE=\${CUDA_CACHE_MAXSIZE:-${env.CUDA_CACHE_MAXSIZE}}`);
  });

  test('puts every bin of package.json on PATH, behind tini', () => {
    for (const [name, target] of Object.entries(pkg.bin)) {
      expect(dockerfile, name).toContain(`ln -s /app/${target} /usr/local/bin/${name}`);
      expect(dockerfile, name).toMatch(new RegExp(`chmod \\+x [^\\n]*${target.replace(/\./g, '\\.')}`));
    }
    expect(instructions).toContain('ENTRYPOINT ["/usr/bin/tini", "--"]');
  });

  test('.dockerignore keeps local builds, outputs and history out of the context', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim());
    for (const entry of ['node_modules', 'dist', 'runs', '.git']) expect(ignored).toContain(entry);
  });
});
