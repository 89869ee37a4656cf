import { describe, expect, it } from 'vitest';

import { Replay, REPLAY_LIMIT } from '../src/replay.js';
import type { ServerEvent } from '../src/types.js';

const snapshot: ServerEvent = { event: 'snapshot', payload: [] };
const keepalive: ServerEvent = { event: 'keepalive', payload: {} };
const count = (n: number): ServerEvent => ({
  event: 'unread_count.updated',
  payload: { count: n },
});

describe('Replay', () => {
  it('keeps nothing before the first snapshot: without one, the events mean nothing', () => {
    const replay = new Replay();
    replay.keep(count(1));
    expect(replay.events).toEqual([]);
    expect(replay.overflowed).toBe(false);
  });

  it('keeps the latest snapshot and the events after it, but no keepalive', () => {
    const replay = new Replay();
    replay.keep(snapshot);
    replay.keep(count(1));
    replay.keep(keepalive);
    replay.keep(count(2));
    expect(replay.events).toEqual([snapshot, count(1), count(2)]);
    const second: ServerEvent = { event: 'snapshot', payload: [] };
    replay.keep(second);
    expect(replay.events).toEqual([second]);
  });

  it(`drops everything past ${REPLAY_LIMIT} events, until the next snapshot`, () => {
    const replay = new Replay();
    replay.keep(snapshot);
    for (let n = 1; n < REPLAY_LIMIT; n += 1) replay.keep(count(n));
    expect(replay.events).toHaveLength(REPLAY_LIMIT);
    expect(replay.overflowed).toBe(false);
    replay.keep(count(REPLAY_LIMIT));
    replay.keep(count(REPLAY_LIMIT + 1));
    expect(replay.events).toEqual([]);
    expect(replay.overflowed).toBe(true);
    replay.keep(snapshot);
    expect(replay.events).toEqual([snapshot]);
    expect(replay.overflowed).toBe(false);
  });

  it('forgets on clear(), overflow included', () => {
    const replay = new Replay();
    replay.keep(snapshot);
    for (let n = 0; n < REPLAY_LIMIT; n += 1) replay.keep(count(n));
    replay.clear();
    expect(replay.overflowed).toBe(false);
    replay.keep(count(1));
    expect(replay.events).toEqual([]);
  });
});
