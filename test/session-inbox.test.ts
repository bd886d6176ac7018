// The worker's inbox during a group session, over a real control channel (a
// WebSocket pair on loopback, ControlConnection at both ends): the order of
// what it hands the session's loop, commits, halts that interrupt every wait,
// where it stops reading, and errors that name the problem.
import { describe, expect, test } from 'vitest';
import type { ControlMessage } from '../src/common/protocol/index.js';
import { HaltSignal, SessionInbox } from '../src/worker/session-inbox.js';
import { controlPair } from './helpers/control-pair.js';

const epoch = (n: number): ControlMessage => ({ type: 'epoch', epoch: n, from: 0, steps: 4 });

/** Settles to what `p` did, without throwing: for asserting on rejections one by one. */
const outcome = <T>(p: Promise<T>) => p.then((value) => ({ value }), (error: Error) => ({ error }));

describe('SessionInbox', () => {
  test('hands the loop every other message in arrival order; commits and halts never reach it', async () => {
    const { coordinator, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 0);
    for (const msg of [epoch(1), { type: 'commit', step: 3 }, { type: 'snapshot' }, { type: 'evaluate', epoch: 1 }, epoch(2)] as ControlMessage[]) {
      coordinator.send(msg);
    }
    expect(await inbox.next()).toEqual(epoch(1));
    expect(await inbox.next()).toEqual({ type: 'snapshot' });
    expect(await inbox.expect('evaluate')).toEqual({ type: 'evaluate', epoch: 1 });
    expect(await inbox.expect('epoch')).toEqual(epoch(2));
    await inbox.committedThrough(3); // the commit was taken in passing
    expect(inbox.halt).toBeNull();
  });

  test('expect names what arrived and what the protocol wanted', async () => {
    const { coordinator, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 0);
    coordinator.send({ type: 'snapshot' });
    await expect(inbox.expect('epoch')).rejects.toThrow(new Error('the coordinator sent "snapshot" where the protocol expects "epoch"'));
  });

  test('committedThrough: the start step counts as committed, later steps wait for their commit, and stale commits never go back', async () => {
    const { coordinator, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 4);
    await inbox.committedThrough(4);
    await inbox.committedThrough(0);

    let reached = false;
    const waiting = inbox.committedThrough(6).then(() => (reached = true));
    coordinator.send({ type: 'commit', step: 5 });
    coordinator.send(epoch(1)); // arrives after the commit: once it is out, the commit has been read
    expect(await inbox.next()).toEqual(epoch(1));
    expect(reached).toBe(false);

    coordinator.send({ type: 'commit', step: 7 });
    coordinator.send({ type: 'commit', step: 2 }); // late and out of order: must not lower the committed step
    coordinator.send(epoch(2));
    await waiting;
    expect(await inbox.next()).toEqual(epoch(2));
    await inbox.committedThrough(7);
    expect(reached).toBe(true);
  });

  test('a halt interrupts every kind of wait with a HaltSignal that carries its step, and runs the halt listeners once', async () => {
    const { coordinator, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 2);
    const heard: string[] = [];
    inbox.onHalt(() => heard.push('first'));
    inbox.onHalt(() => heard.push('second'));
    const waits = [outcome(inbox.next()), outcome(inbox.committedThrough(3)), outcome(inbox.untilHalted())];

    coordinator.send({ type: 'halt', step: 2 });
    for (const result of await Promise.all(waits)) {
      expect(result).toEqual({ error: expect.any(HaltSignal) });
      const signal = (result as { error: HaltSignal }).error;
      expect(signal.halt).toEqual({ type: 'halt', step: 2 });
      expect(signal.message).toBe('the coordinator halted the group at step 2');
    }
    expect(heard).toEqual(['first', 'second']);
    expect(inbox.halt).toEqual({ type: 'halt', step: 2 });

    // A listener added after the halt runs at once (it closes links the session opened late).
    inbox.onHalt(() => heard.push('late'));
    expect(heard).toEqual(['first', 'second', 'late']);
    // And later waits fail the same way, even for a step that is committed.
    await expect(inbox.committedThrough(0)).rejects.toBeInstanceOf(HaltSignal);
  });

  test('after a halt, messages still queued are not handed out, and what follows the halt is left for the worker\'s own loop', async () => {
    const { coordinator, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 0);
    const halted = new Promise<void>((resolve) => inbox.onHalt(resolve));
    coordinator.send(epoch(1));
    coordinator.send({ type: 'halt', step: 0 });
    coordinator.send({ type: 'snapshot' });
    coordinator.send({ type: 'commit', step: 9 });
    await halted;
    await expect(inbox.next()).rejects.toBeInstanceOf(HaltSignal);
    // The inbox stopped reading at the halt: a receive of our own gets the next message (a second
    // concurrent receive on the connection would have been refused), commits included.
    expect(await worker.receive()).toEqual({ type: 'snapshot' });
    expect(await worker.receive()).toEqual({ type: 'commit', step: 9 });
  });

  test('reading also stops at done, which the loop still gets', async () => {
    const { coordinator, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 0);
    coordinator.send({ type: 'done' });
    coordinator.send({ type: 'snapshot' });
    expect(await inbox.next()).toEqual({ type: 'done' });
    expect(await worker.receive()).toEqual({ type: 'snapshot' });
    expect(inbox.halt).toBeNull();
  });

  test('a lost connection: queued messages still come out, then every wait rejects naming the peer and the reason', async () => {
    const { coordinator, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 0);
    const pending = outcome(inbox.committedThrough(5));
    coordinator.send(epoch(1));
    await coordinator.close(1011, 'coordinator stopped');
    await worker.closed;

    const reason = 'coordinator closed the connection (coordinator stopped)';
    expect(await pending).toEqual({ error: new Error(reason) });
    expect(await inbox.next()).toEqual(epoch(1));
    await expect(inbox.next()).rejects.toThrow(new Error(reason));
    await expect(inbox.committedThrough(1)).rejects.toThrow(new Error(reason));
    await expect(inbox.untilHalted()).rejects.toThrow(new Error(reason));
    expect(inbox.halt).toBeNull();
  });

  test('untilHalted rejects with the connection\'s own error when the coordinator breaks the protocol', async () => {
    const { raw, worker } = await controlPair();
    const inbox = new SessionInbox(worker, 0);
    const waiting = inbox.untilHalted();
    raw.send('{"type":"halt","step":0}'); // text, not msgpack
    await expect(waiting).rejects.toThrow(new Error('coordinator: sent a text message; the control channel carries binary msgpack only'));
    await expect(inbox.next()).rejects.toThrow(/^coordinator: sent a text message/);
  });
});
