// Admission of workers by the coordinator's lobby, with real WebSocket
// clients on loopback speaking the control protocol (ControlConnection): the
// first group in join order, refusals and drops with their reasons, spares
// after the start, and workers that leave while they wait.
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { ControlConnection, PROTOCOL_VERSION, type ControlMessage } from '../src/common/protocol/index.js';
import { DEFAULTS } from '../src/common/training/config.js';
import { Admission } from '../src/coordinator/admission.js';
import { RunFeed } from '../src/coordinator/dashboard/run-feed.js';
import { Lobby } from '../src/coordinator/lobby.js';

const TOKEN = 'lobby-test-secret';

interface Setup {
  lobby: Lobby;
  log: string[];
  feed: RunFeed;
  url: string;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(size: number, helloTimeoutMs = 30_000): Promise<Setup> {
  const log: string[] = [];
  const feed = new RunFeed(DEFAULTS, size, 'ring', []);
  const lobby = new Lobby(size, new Admission(TOKEN), (line) => log.push(line), feed, helloTimeoutMs);
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  wss.on('connection', (ws, req) => void lobby.admit(ws, req));
  await new Promise((resolve) => wss.once('listening', resolve));
  cleanups.push(async () => {
    feed.close();
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => wss.close(resolve));
  });
  return { lobby, log, feed, url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}` };
}

interface Client {
  conn: ControlConnection;
  /** host:port as the lobby sees it. */
  address: string;
}

async function connect(url: string): Promise<Client> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const conn = new ControlConnection(ws, 'coordinator');
  cleanups.push(() => conn.close());
  return { conn, address: `127.0.0.1:${(ws as unknown as { _socket: { localPort: number } })._socket.localPort}` };
}

const hello = (token = TOKEN, protocol = PROTOCOL_VERSION): ControlMessage => ({ type: 'hello', protocol, token, backend: null });

/** Resolves once `done()` holds; fails naming `what` if it still does not after 10 s. */
async function eventually(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; !done(); i++) {
    if (i === 2000) throw new Error(`still waiting, after 10 s, for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Resolves once the log has `count` lines (the lobby logs once per decision). */
async function logLines(log: string[], count: number): Promise<string[]> {
  await eventually(() => log.length >= count, `log line ${count} (log so far: ${JSON.stringify(log)})`);
  return log;
}

/** Connects, says hello, and waits for the lobby's verdict (one more log line). */
async function join(s: Setup, msg: ControlMessage = hello()): Promise<Client> {
  const before = s.log.length;
  const client = await connect(s.url);
  client.conn.send(msg);
  await logLines(s.log, before + 1);
  return client;
}

describe('Lobby', () => {
  test('the first group is the first --workers admitted, in join order; their dashboard rows exist from the hello', async () => {
    const s = await setup(3);
    let formed = false;
    void s.lobby.full.then(() => (formed = true));
    const a = await join(s);
    const b = await join(s);
    expect(s.log).toEqual([`worker ${a.address} joined (1/3)`, `worker ${b.address} joined (2/3)`]);
    expect(formed).toBe(false);
    expect(s.lobby.waiting().length).toBe(2);
    expect(s.lobby.spares).toBe(0); // before the start, nobody is a spare

    const c = await join(s);
    const members = await s.lobby.full;
    expect(members.map((m) => m.address)).toEqual([a.address, b.address, c.address]);
    expect(s.log.at(-1)).toBe(`worker ${c.address} joined (3/3)`);
    expect(s.feed.snapshot().workers.map((w) => [w.host, w.state])).toEqual([a, b, c].map((x) => [x.address, 'joined']));
    expect(members.map((m) => m.view)).toEqual(s.feed.snapshot().workers);
    // The group owns them now: the lobby no longer lists them for cleanup.
    expect(s.lobby.waiting()).toEqual([]);
    // Each member's connection is the live one: what its worker sends arrives there.
    a.conn.send({ type: 'data-status', cached: true });
    expect(await members[0].conn.receive()).toEqual({ type: 'data-status', cached: true });
  });

  test('a wrong token or protocol version is refused with the reason on both sides, and does not take a place', async () => {
    const s = await setup(1);
    const wrongToken = await join(s, hello('guess'));
    const refusal = await wrongToken.conn.receive();
    expect(refusal).toEqual({ type: 'refused', reason: expect.stringMatching(/^wrong token: start the worker with the coordinator's --token/) });
    await wrongToken.conn.closed;
    expect(wrongToken.conn.closeCode).toBe(1008);
    const reason = (refusal as { reason: string }).reason;
    expect(s.log).toEqual([`refused worker ${wrongToken.address}: ${reason}`]);
    expect(reason).not.toContain('guess');

    const oldVersion = await join(s, hello(TOKEN, PROTOCOL_VERSION - 1));
    await expect(oldVersion.conn.expect('init')).rejects.toThrow(
      `coordinator refused this worker: protocol version ${PROTOCOL_VERSION - 1} is not supported: this coordinator speaks version ${PROTOCOL_VERSION}`,
    );

    const good = await join(s);
    expect((await s.lobby.full).map((m) => m.address)).toEqual([good.address]);
    expect(s.feed.snapshot().workers.map((w) => w.host)).toEqual([good.address]);
  });

  test('a connection that says something else first, or nothing in time, is dropped naming the problem', async () => {
    const s = await setup(2, 50);
    const chatty = await join(s, { type: 'data-status', cached: false });
    await chatty.conn.closed;
    expect(chatty.conn.closeCode).toBe(1002);
    expect(s.log).toEqual([`dropped worker ${chatty.address} sent "data-status" where the protocol expects "hello"`]);

    const mute = await connect(s.url); // never says hello
    await mute.conn.closed;
    expect(mute.conn.closeCode).toBe(1002);
    expect((await logLines(s.log, 2))[1]).toBe(`dropped worker ${mute.address}: sent no hello within 0.05 s`);
    // The lobby lets go of a dropped connection once its own end has closed.
    await eventually(() => s.lobby.waiting().length === 0, 'the dropped connections to leave waiting()');
    expect(s.feed.snapshot().workers).toEqual([]);
  });

  test('a worker that leaves before the start gives its place back', async () => {
    const s = await setup(2);
    const quitter = await join(s);
    await quitter.conn.close();
    await logLines(s.log, 2);
    expect(s.log[1]).toBe(`worker ${quitter.address} left before joining a group (0/2)`);
    expect(s.lobby.waiting()).toEqual([]);
    expect(s.feed.snapshot().workers).toEqual([expect.objectContaining({ host: quitter.address, state: 'failed' })]);

    const a = await join(s);
    const b = await join(s);
    expect((await s.lobby.full).map((m) => m.address)).toEqual([a.address, b.address]);
    expect(s.log.slice(2)).toEqual([`worker ${a.address} joined (1/2)`, `worker ${b.address} joined (2/2)`]);
  });

  test('after the start: spares while there is room, in join order; refused once the run is full', async () => {
    const s = await setup(1);
    await join(s);
    await s.lobby.full;
    let room = 2; // two places left below --workers, as the coordinator counts them (spares included)
    s.lobby.started(() => room - s.lobby.spares);

    const twoSpares = s.lobby.waitForSpares(2);
    let two = false;
    void twoSpares.then(() => (two = true));
    const x = await join(s);
    expect(s.log.at(-1)).toBe(`worker ${x.address} joined as a spare; it enters the group at the next step`);
    expect(s.lobby.spares).toBe(1);
    await s.lobby.waitForSpares(1);
    expect(two).toBe(false);
    const y = await join(s);
    await twoSpares;
    expect(s.lobby.spares).toBe(2);

    const late = await join(s);
    expect(await late.conn.receive()).toEqual({ type: 'refused', reason: 'the run already has all its workers' });
    expect(s.log.at(-1)).toBe(`refused worker ${late.address}: the run already has all its workers`);
    expect(s.lobby.spares).toBe(2);

    expect(s.lobby.takeSpares(-1)).toEqual([]);
    const taken = s.lobby.takeSpares(1);
    expect(taken.map((m) => m.address)).toEqual([x.address]);
    room -= 1; // x is in the group now
    expect(s.lobby.takeSpares(5).map((m) => m.address)).toEqual([y.address]);
    expect(s.lobby.spares).toBe(0);
  });

  test('a spare that leaves while it waits is dropped from the spares and shown as failed', async () => {
    const s = await setup(1);
    await join(s);
    await s.lobby.full;
    s.lobby.started(() => 3 - s.lobby.spares);
    const a = await join(s);
    const b = await join(s);
    expect(s.lobby.spares).toBe(2);

    const lines = s.log.length;
    await a.conn.close();
    expect((await logLines(s.log, lines + 1)).at(-1)).toBe(`worker ${a.address} left before joining a group (1 spare(s))`);
    expect(s.lobby.spares).toBe(1);
    expect(s.feed.snapshot().workers.find((w) => w.host === a.address)?.state).toBe('failed');
    const [taken] = s.lobby.takeSpares(2);
    expect(taken.address).toBe(b.address);
    expect(s.lobby.spares).toBe(0);

    // Once taken into a group, a worker's departure is the group's business, not the lobby's.
    await b.conn.close();
    await taken.conn.closed; // the lobby's own handler for this close has run by now
    expect(s.log.length).toBe(lines + 1);
    expect(s.feed.snapshot().workers.find((w) => w.host === b.address)?.state).toBe('joined');
  });
});
