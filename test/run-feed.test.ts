// The dashboard's state across group changes: the group in rank order, the
// workers it lost kept on show as failed, those that left before the start gone.
import { expect, test } from 'vitest';
import { DEFAULTS } from '../src/common/training/config.js';
import { RunFeed } from '../src/coordinator/dashboard/run-feed.js';

test('a new group lists its members by rank, then the lost workers as failed', () => {
  const feed = new RunFeed(DEFAULTS, 3, 'ring', [], 1_000_000);
  const [a, b, gone, c] = ['h:1', 'h:2', 'h:3', 'h:4'].map((host) => feed.workerJoined(host));
  feed.workerUpdate(gone, { state: 'failed' }); // left before the start
  feed.ranksAssigned([a, b, c]);
  expect(feed.snapshot().workers.map((w) => [w.host, w.rank])).toEqual([['h:1', 0], ['h:2', 1], ['h:4', 2]]);

  feed.workerUpdate(b, { state: 'failed' });
  const spare = feed.workerJoined('h:5');
  feed.ranksAssigned([a, c, spare], [b]);
  expect(feed.snapshot().workers.map((w) => [w.host, w.rank, w.state])).toEqual([
    ['h:1', 0, 'joined'], ['h:4', 1, 'joined'], ['h:5', 2, 'joined'], ['h:2', null, 'failed'],
  ]);
  feed.close();
});
