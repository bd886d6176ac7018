// Membership changes, as torchrun and Horovod elastic do them: a failure
// becomes a new group, and training resumes from the last consistent state.
//
// The last consistent state is the last committed step C (every rank
// reported it). A rank applies step C + 1 only after `commit C`, so when a
// rank is lost every survivor is at C or C + 1, and the one step it may be
// past C is undone from the copy it keeps (ReplicaState). The procedure:
//
//   1. halt {step: C} to every member; a member that answers `halted` is a
//      survivor, one whose socket closes, that fails, or that the watchdog
//      gives up on is lost;
//   2. the survivors' weights and momentum checksums must agree; their
//      running statistics (per replica since the last average) are averaged
//      here, and the first survivor sends its weights and momentum;
//   3. --on-worker-loss decides: abort writes a checkpoint at C and ends the
//      run; wait holds until spares bring the group back to --workers;
//      shrink goes on with the survivors (plus any spares);
//   4. a new group of the survivors, then the spares that fit, is formed
//      (group.ts) from C, with new ranks: the global batches stay the same
//      and are cut into the new number of shards, so every image of the
//      epoch is still seen once.
//
// A failure during any of this starts it again with the members that remain.

import type { RunState } from '../common/training/run-state.js';
import { describePeerError, type HaltedMessage, type PeerError } from '../common/protocol/index.js';
import { Group, MemberFailure, type GroupSetup, type Member } from './group.js';
import type { Lobby } from './lobby.js';
import type { WorkerView } from './dashboard/run-feed.js';

export type WorkerLossPolicy = 'shrink' | 'wait' | 'abort';
export const WORKER_LOSS_POLICIES: readonly WorkerLossPolicy[] = ['shrink', 'wait', 'abort'];

/** Re-formations in a row that lost nobody and gained nobody (a broken link between live workers) before the run gives up. */
const MAX_FRUITLESS_REFORMS = 3;

export interface MembershipOptions {
  setup: GroupSetup;
  lobby: Lobby;
  policy: WorkerLossPolicy;
  /** --workers: the size the group is kept at, or grows back to. */
  target: number;
  /** Writes a checkpoint of `state` (the abort policy, before it ends the run). */
  checkpoint: () => Promise<void>;
}

/**
 * The run ends for the loss of workers that did not say why (every one of
 * them, or one under --on-worker-loss abort); the message advises --resume.
 */
export class WorkersLostError extends Error {
  override name = 'WorkersLostError';
}

export class Membership {
  private fruitless = 0;
  /** Dashboard rows of every worker lost so far, kept on show below the group. */
  private readonly lostViews: WorkerView[] = [];
  /** Every group this run has had, by size: for the run's summary. */
  readonly changes: { step: number; from: number; to: number; lost: string[] }[] = [];
  /** Members lost since the last committed step that said why (their `error`), named as they were then. */
  private failedSinceCommit: { peer: string; error: PeerError }[] = [];

  constructor(public group: Group, private readonly state: RunState, private readonly o: MembershipOptions) {}

  /** Current members, in rank order. */
  get members(): Member[] {
    return this.group.members;
  }

  /** Whether a spare is waiting for a place the group has (elastic growth at the next step boundary). */
  get canGrow(): boolean {
    return this.o.policy !== 'abort' && this.o.lobby.spares > 0 && this.group.size < this.o.target;
  }

  /** A step was committed: link failures before it were overcome. */
  progressed(): void {
    this.fruitless = 0;
    this.failedSinceCommit = [];
  }

  /**
   * Replaces the group after `cause` (a MemberFailure, or null for growth).
   * Returns once a new group is ready to train from the committed step;
   * throws when the policy, or the loss of every worker, ends the run.
   * The steps are those of the file comment; a member failure in step 2 or 4
   * starts again at step 1 with the members that remain.
   */
  async reform(cause: MemberFailure | null): Promise<void> {
    const step = this.state.step;
    const before = this.group.size;
    this.o.setup.log(cause
      ? `${describeMemberFailure(cause.member, cause.message)}; halting the group at step ${step}`
      : `a spare is waiting; halting the group at step ${step} to add it`);
    await this.group.close();
    const lostSoFar: Lost = { names: [], views: [] };
    let members = this.group.members;
    for (;;) {
      const round = await this.halt(members, step, lostSoFar);
      if (!(await this.agreeOnState(round, step))) {
        members = round.survivors;
        continue;
      }
      await this.applyLossPolicy(round.survivors, lostSoFar, step);
      const next = this.addSpares(round, cause);
      if (!(await this.formGroup(next, round))) {
        members = next;
        continue;
      }
      this.recordChange(step, before, next, next.length - round.survivors.length, lostSoFar);
      return;
    }
  }

  /**
   * Step 1: halts `members` at `step`; those that answer are the survivors
   * and the group from now on (the lobby has room for the lost ones'
   * places). Throws when nobody answers.
   */
  private async halt(members: Member[], step: number, lostSoFar: Lost): Promise<HaltRound> {
    const { setup } = this.o;
    const round = await haltMembers(members, step);
    for (const { member, reason } of round.lost) {
      setup.log(`lost ${member.conn.peer}: ${reason}`);
      lostSoFar.names.push(`worker ${member.address}`);
      if (member.conn.peerError) this.failedSinceCommit.push({ peer: member.conn.peer, error: member.conn.peerError });
      if (member.view) {
        setup.feed?.workerUpdate(member.view, { state: 'failed' });
        lostSoFar.views.push(member.view);
      }
    }
    if (round.survivors.length === 0) {
      const same = sameFailure(round.lost.map(({ member }) => member.conn.peerError));
      if (same) {
        // Every rank failed the same way at the same step: a resumed run would fail there again.
        const peers = this.failedSinceCommit.filter((f) => f.error.message === same.message && f.error.step === same.step).map((f) => f.peer);
        throw new Error(`${joinNames(peers)} ${describePeerError(same)}`);
      }
      throw new WorkersLostError(`every worker was lost by step ${step}: continue with coordinator --resume ${setup.cfg.out} (newest checkpoint)`);
    }
    this.group = Group.unformed(round.survivors);
    return round;
  }

  /**
   * Step 2: the survivors' checksums must agree; their running statistics
   * are averaged into the run state, and the weights and momentum fetched
   * from the first survivor. False if that survivor failed meanwhile.
   */
  private async agreeOnState({ survivors, halted }: HaltRound, step: number): Promise<boolean> {
    checkAgreement(survivors, halted, step);
    this.state.runningStats.set(averageStats(halted));
    try {
      await fetchWeights(survivors[0], this.state);
      return true;
    } catch (err) {
      if (!(err instanceof MemberFailure)) throw err;
      return false;
    }
  }

  /** Step 3: under abort, a loss ends the run with a checkpoint; under wait, the group waits for spares to fill it. */
  private async applyLossPolicy(survivors: Member[], lostSoFar: Lost, step: number): Promise<void> {
    const { setup, lobby, policy, target } = this.o;
    if (lostSoFar.names.length > 0 && policy === 'abort') {
      await this.o.checkpoint();
      throw new WorkersLostError(`lost ${lostSoFar.names.join(', ')} (--on-worker-loss abort): checkpoint written at step ${step}; ` +
        `continue with coordinator --resume ${setup.cfg.out}`);
    }
    if (policy === 'wait' && survivors.length + lobby.spares < target) {
      const missing = target - survivors.length - lobby.spares;
      setup.log(`--on-worker-loss wait: waiting for ${missing} replacement worker(s) (worker --connect <this coordinator>)`);
      await lobby.waitForSpares(target - survivors.length);
    }
  }

  /**
   * Step 4's members: the survivors, then the spares that fit. A
   * re-formation that neither lost nor gained anyone counts as fruitless, and
   * too many in a row end the run.
   */
  private addSpares({ survivors, lost }: HaltRound, cause: MemberFailure | null): Member[] {
    const spares = this.o.lobby.takeSpares(this.o.target - survivors.length);
    if (lost.length === 0 && spares.length === 0 && ++this.fruitless > MAX_FRUITLESS_REFORMS) {
      throw new Error(`the all-reduce failed ${this.fruitless} times in a row with every worker alive (${cause?.message}): ` +
        'check the network between the workers (--ring-host, firewalls)');
    }
    return [...survivors, ...spares];
  }

  /** Step 4: forms the group of `next` from the committed step. False if a member failed meanwhile. */
  private async formGroup(next: Member[], { survivors, halted }: HaltRound): Promise<boolean> {
    this.group = Group.unformed(next);
    try {
      // Survivors hold the committed weights and momentum already: only newcomers are sent them.
      this.group = await Group.form(next, this.state, this.o.setup, { members: new Set(survivors), checksum: halted[0].checksum });
      return true;
    } catch (err) {
      if (!(err instanceof MemberFailure)) throw err;
      this.o.setup.log(`while the group formed, ${describeMemberFailure(err.member, err.message)}`);
      return false;
    }
  }

  /** The new group is in place: the dashboard, the run's summary and the log say so. */
  private recordChange(step: number, before: number, next: Member[], joined: number, lostSoFar: Lost): void {
    this.lostViews.push(...lostSoFar.views);
    this.o.setup.feed?.ranksAssigned(next.flatMap((m) => (m.view ? [m.view] : [])), this.lostViews);
    this.changes.push({ step, from: before, to: next.length, lost: lostSoFar.names });
    this.o.setup.log(`group re-formed at step ${step}: ${next.length} worker(s)` +
      (joined > 0 ? `, ${joined} joined` : '') + (lostSoFar.names.length > 0 ? `, ${lostSoFar.names.length} lost` : ''));
  }
}

/** The workers lost during one re-formation, over all its rounds. */
interface Lost {
  /** "worker host:port", for the run's summary and the abort message. */
  names: string[];
  views: WorkerView[];
}

/** What one halt found: the survivors with their `halted` answers (same order), and the members lost in this round. */
interface HaltRound {
  survivors: Member[];
  halted: HaltedMessage[];
  lost: { member: Member; reason: string }[];
}

/** Connection errors start with the peer's name; log lines name it once. */
function withoutPeer(member: Member, message: string): string {
  const prefix = `${member.conn.peer}: `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

/**
 * "rank R (worker H:P) failed at step S: <its error>" when the member said
 * why it failed, else the failure as seen from here, naming the member once.
 */
function describeMemberFailure(member: Member, message: string): string {
  const { peer, peerError } = member.conn;
  if (peerError) return `${peer} ${describePeerError(peerError)}`;
  return message.startsWith(`${peer} `) ? message : `${peer}: ${withoutPeer(member, message)}`;
}

/** The one error every member reported, if each did and they agree on message and step; else null. */
function sameFailure(errors: (PeerError | null)[]): PeerError | null {
  const first = errors[0];
  if (!first) return null;
  return errors.every((e) => e !== null && e.message === first.message && e.step === first.step) ? first : null;
}

/** "a", "a and b", "a, b and c". */
function joinNames(names: string[]): string {
  return names.length <= 1 ? names.join('') : `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
}

/** Sends halt to every member and waits for each one's `halted`; those that answer are the survivors. */
async function haltMembers(members: Member[], step: number): Promise<HaltRound> {
  const answers = await Promise.all(members.map(async (member) => {
    try {
      // A member that reported its failure is leaving: there is no halt to wait for.
      if (member.conn.peerError) throw new Error(describePeerError(member.conn.peerError));
      member.conn.send({ type: 'halt', step });
      return { member, halted: await awaitHalted(member, step) };
    } catch (err) {
      // A socket that is going away says why once its close event is in.
      if (!member.conn.peerError) await Promise.race([member.conn.closed, new Promise((resolve) => setTimeout(resolve, 1000))]);
      await member.conn.close(1011, 'lost').catch(() => {});
      // A member that reported its failure is lost for that reason, not for the close that follows it.
      const { peerError } = member.conn;
      return { member, reason: peerError ? describePeerError(peerError) : withoutPeer(member, (member.conn.failedWith ?? (err as Error)).message) };
    }
  }));
  const survivors: Member[] = [];
  const halted: HaltedMessage[] = [];
  const lost: { member: Member; reason: string }[] = [];
  for (const a of answers) {
    if (a.halted) {
      survivors.push(a.member);
      halted.push(a.halted);
    } else {
      lost.push({ member: a.member, reason: a.reason! });
    }
  }
  return { survivors, halted, lost };
}

/** Skips what the member sent for the abandoned work (step reports, evaluations, reduce-failed) up to its `halted`. */
async function awaitHalted(member: Member, step: number): Promise<HaltedMessage> {
  for (;;) {
    // Rejects once the socket closes, or the watchdog gives up on a silent member.
    const msg = await member.conn.receive();
    if (msg.type === 'error') throw new Error(describePeerError(msg));
    if (msg.type !== 'halted') continue;
    if (msg.step !== step) throw new Error(`halted at step ${msg.step}, not at the committed step ${step}`);
    return msg;
  }
}

/** After the rollback every survivor must hold the same weights and momentum; anything else is a bug, not a failure to recover from. */
function checkAgreement(survivors: Member[], halted: HaltedMessage[], step: number): void {
  const off = halted.flatMap((h, i) => (h.checksum !== halted[0].checksum ? [survivors[i].conn.peer] : []));
  if (off.length > 0) {
    throw new Error(`replica weights diverged at step ${step}: ${off.join(', ')} differ from ${survivors[0].conn.peer}`);
  }
}

/** Mean of the survivors' running statistics, summed in float64. */
function averageStats(halted: HaltedMessage[]): Float32Array {
  const n = halted[0].runningStats.length;
  const sum = new Float64Array(n);
  for (const h of halted) {
    if (h.runningStats.length !== n) throw new Error(`a survivor sent ${h.runningStats.length} running statistics, another ${n}`);
    for (let i = 0; i < n; i++) sum[i] += h.runningStats[i];
  }
  const mean = new Float32Array(n);
  for (let i = 0; i < n; i++) mean[i] = sum[i] / halted.length;
  return mean;
}

/** The committed weights and momentum, from one survivor (they are identical on all). */
async function fetchWeights(member: Member, state: RunState): Promise<void> {
  try {
    member.conn.send({ type: 'snapshot' });
    const { step, weights, momentum } = await member.conn.expect('state');
    if (step !== state.step || weights?.length !== state.weights.length || momentum?.length !== state.momentum.length) {
      throw new Error(`sent the state of step ${step} with ${weights?.length ?? 0} weights; the run is at step ${state.step} with ${state.weights.length}`);
    }
    state.weights.set(weights);
    state.momentum.set(momentum);
  } catch (err) {
    throw new MemberFailure(member, err as Error);
  }
}
