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
//   4. a new group is formed (group.ts) from C, with new ranks: the global
//      batches stay the same and are cut into the new number of shards, so
//      every image of the epoch is still seen once.
//
// A failure during any of this starts it again with the members that remain.

import type { RunState } from '../common/training/run-state.js';
import type { HaltedMessage } from '../common/protocol/index.js';
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

export class Membership {
  private fruitless = 0;
  /** Dashboard rows of every worker lost so far, kept on show below the group. */
  private readonly lostViews: WorkerView[] = [];
  /** Every group this run has had, by size: for the run's summary. */
  readonly changes: { step: number; from: number; to: number; lost: string[] }[] = [];

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
  }

  /**
   * Replaces the group after `cause` (a MemberFailure, or null for growth).
   * Returns once a new group is ready to train from the committed step;
   * throws when the policy, or the loss of every worker, ends the run.
   */
  async reform(cause: MemberFailure | null): Promise<void> {
    const { setup, lobby, policy, target } = this.o;
    const log = setup.log;
    const step = this.state.step;
    const before = this.group.size;
    log(cause ? `${cause.member.conn.peer}: ${withoutPeer(cause.member, cause.message)}; halting the group at step ${step}` : `a spare is waiting; halting the group at step ${step} to add it`);
    await this.group.close();
    const lostNames: string[] = [];
    const lostViews: WorkerView[] = [];
    let members = this.group.members;
    for (;;) {
      const { survivors, lost, halted } = await haltMembers(members, step);
      for (const { member, reason } of lost) {
        log(`lost ${member.conn.peer}: ${reason}`);
        lostNames.push(`worker ${member.address}`);
        if (member.view) {
          setup.feed?.workerUpdate(member.view, { state: 'failed' });
          lostViews.push(member.view);
        }
      }
      if (survivors.length === 0) {
        throw new Error(`every worker was lost by step ${step}: continue with coordinator --resume ${setup.cfg.out} (newest checkpoint)`);
      }
      // From here the group is the survivors: the lobby has room for the lost ones' places.
      this.group = Group.unformed(survivors);
      checkAgreement(survivors, halted, step);
      this.state.runningStats.set(averageStats(halted));
      try {
        await fetchWeights(survivors[0], this.state);
      } catch (err) {
        if (!(err instanceof MemberFailure)) throw err;
        members = survivors;
        continue;
      }
      if (lostNames.length > 0 && policy === 'abort') {
        await this.o.checkpoint();
        throw new Error(`lost ${lostNames.join(', ')} (--on-worker-loss abort): checkpoint written at step ${step}; ` +
          `continue with coordinator --resume ${setup.cfg.out}`);
      }
      if (policy === 'wait' && survivors.length + lobby.spares < target) {
        const missing = target - survivors.length - lobby.spares;
        log(`--on-worker-loss wait: waiting for ${missing} replacement worker(s) (worker --connect <this coordinator>)`);
        await lobby.waitForSpares(target - survivors.length);
      }
      const spares = lobby.takeSpares(target - survivors.length);
      const next = [...survivors, ...spares];
      if (lost.length === 0 && spares.length === 0 && ++this.fruitless > MAX_FRUITLESS_REFORMS) {
        throw new Error(`the all-reduce failed ${this.fruitless} times in a row with every worker alive (${cause?.message}): ` +
          'check the network between the workers (--ring-host, firewalls)');
      }
      this.group = Group.unformed(next);
      try {
        // Survivors hold the committed weights and momentum already: only newcomers are sent them.
        this.group = await Group.form(next, this.state, setup, { members: new Set(survivors), checksum: halted[0].checksum });
      } catch (err) {
        if (!(err instanceof MemberFailure)) throw err;
        log(`${err.member.conn.peer} failed while the group formed: ${withoutPeer(err.member, err.message)}`);
        members = next;
        continue;
      }
      this.lostViews.push(...lostViews);
      setup.feed?.ranksAssigned(next.flatMap((m) => (m.view ? [m.view] : [])), this.lostViews);
      this.changes.push({ step, from: before, to: next.length, lost: lostNames });
      log(`group re-formed at step ${step}: ${next.length} worker(s)` +
        (spares.length > 0 ? `, ${spares.length} joined` : '') + (lostNames.length > 0 ? `, ${lostNames.length} lost` : ''));
      return;
    }
  }
}

/** Connection errors start with the peer's name; log lines name it once. */
function withoutPeer(member: Member, message: string): string {
  const prefix = `${member.conn.peer}: `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

/** Sends halt to every member and waits for each one's `halted`; those that answer are the survivors. */
async function haltMembers(members: Member[], step: number): Promise<{ survivors: Member[]; halted: HaltedMessage[]; lost: { member: Member; reason: string }[] }> {
  const answers = await Promise.all(members.map(async (member) => {
    try {
      member.conn.send({ type: 'halt', step });
      return { member, halted: await awaitHalted(member, step) };
    } catch (err) {
      // A socket that is going away says why once its close event is in.
      await Promise.race([member.conn.closed, new Promise((resolve) => setTimeout(resolve, 1000))]);
      await member.conn.close(1011, 'lost').catch(() => {});
      return { member, reason: withoutPeer(member, (member.conn.failedWith ?? (err as Error)).message) };
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
    if (msg.type === 'error') throw new Error(`failed: ${msg.message}`);
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
