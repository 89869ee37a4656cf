import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import {
  CLAIM_MS,
  type Election,
  type ElectionHost,
  HEARTBEAT_MS,
  HeartbeatElection,
  LEADER_SILENCE_MS,
  type LockManagerLike,
  LocksElection,
} from '../src/election.js';
import type { ElectionBody, ElectionMessage, TabMessage } from '../src/tab-messages.js';
import { FakeChannelHub, FakeLockManager } from './tab-fakes.js';

const GROUP = 'campana:https://app.example:user-1';
const ELECTION_TYPES = new Set(['leader', 'claim', 'bye', 'welcome']);

let hub: FakeChannelHub;
let locks: FakeLockManager;

/**
 * One tab's election alone, over a fake channel: `log` is what it told its tab. A welcome
 * reaches it only from `welcome()`, as the tab passes on only the one addressed to it.
 */
function tab(tabId: string, elect: (host: ElectionHost) => Election) {
  const channel = hub.create(GROUP);
  const log: string[] = [];
  const posted: ElectionBody[] = [];
  const host: ElectionHost = {
    tabId,
    now: () => Date.now(),
    post: (body) => {
      posted.push(body);
      channel.postMessage({ ...body, from: tabId });
    },
    elected: () => log.push('elected'),
    deposed: () => log.push('deposed'),
    followed: (leaderId) => log.push(`followed ${leaderId}`),
  };
  const election = elect(host);
  channel.onmessage = (event) => {
    const message = event.data as TabMessage;
    if (ELECTION_TYPES.has(message.type) && message.type !== 'welcome')
      election.receive(message as ElectionMessage);
  };
  const welcome = (from: string) =>
    election.receive({ type: 'welcome', from, to: tabId, state: 'open', auth: null, replay: [] });
  /** As a tab leaves: the election stops, the tab says bye and closes its channel. */
  const leave = () => {
    election.stop();
    channel.postMessage({ type: 'bye', from: tabId });
    channel.close();
  };
  return { election, log, posted, welcome, leave };
}

const heartbeat = (tabId: string) => tab(tabId, (host) => new HeartbeatElection(host));

function withLocks(tabId: string, manager: LockManagerLike = locks) {
  const refused = vi.fn();
  const t = tab(tabId, (host) => new LocksElection(manager, GROUP, host, refused));
  return { ...t, refused };
}

/** Let locks be granted and messages (and the answers to them) arrive. */
async function settle(): Promise<void> {
  for (let hop = 0; hop < 10; hop += 1) await vi.advanceTimersByTimeAsync(1);
}

beforeEach(() => {
  vi.useFakeTimers();
  hub = new FakeChannelHub();
  locks = new FakeLockManager();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('HeartbeatElection', () => {
  it('elects a lone tab after a heartbeat period of silence and a claim nobody objected to', async () => {
    const a = heartbeat('a');
    a.election.start();
    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS + CLAIM_MS - 1);
    expect(a.posted).toEqual([{ type: 'claim' }]);
    expect(a.election.leading).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(a.election.leading).toBe(true);
    expect(a.log).toEqual(['elected']);
    expect(a.posted.at(-1)).toEqual({ type: 'leader' });
  });

  it('beats while it leads: a tab that joins follows it, and its claim is answered', async () => {
    const a = heartbeat('a');
    a.election.start();
    await vi.advanceTimersByTimeAsync(1_000);
    const b = heartbeat('b');
    b.election.start();
    await vi.advanceTimersByTimeAsync(10 * LEADER_SILENCE_MS);
    expect(b.log).toEqual(['followed a']);
    expect(b.posted.filter((body) => body.type === 'claim')).toHaveLength(1); // no welcome here
    expect(a.log).toEqual(['elected']);
  });

  it('follows the leader that welcomes it, without waiting for its heartbeat', async () => {
    const b = heartbeat('b');
    b.election.start();
    b.welcome('a');
    expect(b.log).toEqual(['followed a']);
    await vi.advanceTimersByTimeAsync(LEADER_SILENCE_MS - 1);
    expect(b.posted).toEqual([]); // a welcome is as good as a beat
  });

  it('breaks a tie between tabs that claim together: the lowest tab id leads', async () => {
    const b = heartbeat('b');
    const a = heartbeat('a');
    b.election.start();
    a.election.start();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(a.log).toEqual(['elected']);
    expect(b.log).toEqual(['followed a']);
    expect(b.election.leading).toBe(false);
  });

  it('takes over from a leader that falls silent', async () => {
    const a = heartbeat('a');
    const b = heartbeat('b');
    a.election.start();
    b.election.start();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(a.election.leading).toBe(true);
    hub.muted.add('a'); // frozen or crashed: no bye
    await vi.advanceTimersByTimeAsync(LEADER_SILENCE_MS);
    expect(b.election.leading).toBe(false);
    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS + CLAIM_MS);
    expect(b.log).toEqual(['followed a', 'elected']);
  });

  it('claims at the next heartbeat when its leader says bye, not after a second of silence', async () => {
    const a = heartbeat('a');
    const b = heartbeat('b');
    a.election.start();
    b.election.start();
    // Between two beats: under fake timers a beat sent with the bye would arrive after it.
    await vi.advanceTimersByTimeAsync(1_100);
    a.leave();
    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS + CLAIM_MS + 2);
    expect(b.election.leading).toBe(true);
  });

  it('steps the higher tab id down when two leaders meet after a race', async () => {
    const a = heartbeat('a');
    const b = heartbeat('b');
    hub.muted.add('a');
    hub.muted.add('b');
    a.election.start();
    b.election.start();
    await vi.advanceTimersByTimeAsync(1_000);
    expect([a.log, b.log]).toEqual([['elected'], ['elected']]); // each believes it is alone
    hub.muted.clear();
    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS + 10);
    expect(a.log).toEqual(['elected']);
    expect(b.log).toEqual(['elected', 'deposed', 'followed a']);
    expect(a.election.leading).toBe(true);
    expect(b.election.leading).toBe(false);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(b.log).toHaveLength(3); // it follows: no new claim
  });

  it('answers a claim while it leads, and a candidate yields to a lower tab id', async () => {
    const b = heartbeat('b');
    b.election.start();
    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS);
    expect(b.posted).toEqual([{ type: 'claim' }]);
    b.election.receive({ type: 'claim', from: 'a' });
    await vi.advanceTimersByTimeAsync(CLAIM_MS);
    expect(b.election.leading).toBe(false); // waits for `a` to lead instead
    b.election.receive({ type: 'claim', from: 'c' });
    await vi.advanceTimersByTimeAsync(LEADER_SILENCE_MS + HEARTBEAT_MS + CLAIM_MS);
    expect(b.election.leading).toBe(true); // `a` never came: `b` claimed again and won
    b.election.receive({ type: 'claim', from: 'a' });
    expect(b.posted.at(-1)).toEqual({ type: 'leader' });
    expect(b.log).toEqual(['elected']);
  });

  it('stops for good: no timer left, no message read', async () => {
    const a = heartbeat('a');
    a.election.start();
    await vi.advanceTimersByTimeAsync(1_000);
    a.leave();
    await settle();
    expect(vi.getTimerCount()).toBe(0);
    expect(a.election.leading).toBe(false);
    a.election.receive({ type: 'leader', from: 'b' });
    expect(a.log).toEqual(['elected']);
  });
});

describe('LocksElection', () => {
  it('elects the tab granted the lock, and the next in line at once when it leaves', async () => {
    const a = withLocks('a');
    const b = withLocks('b');
    a.election.start();
    b.election.start();
    await settle();
    expect(a.log).toEqual(['elected']);
    expect(a.posted).toEqual([{ type: 'leader' }]);
    expect(b.log).toEqual(['followed a']);
    expect(locks.waiting(GROUP)).toBe(1);
    a.leave();
    await settle();
    expect(b.log).toEqual(['followed a', 'elected']);
    expect(b.election.leading).toBe(true);
  });

  it('holds the lock until stop(), with no timer of its own', async () => {
    const a = withLocks('a');
    a.election.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(locks.isHeld(GROUP)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    a.election.stop();
    await settle();
    expect(locks.isHeld(GROUP)).toBe(false);
  });

  it('gives up its place in line on stop(), and is never elected', async () => {
    const a = withLocks('a');
    const b = withLocks('b');
    a.election.start();
    b.election.start();
    await settle();
    b.election.stop();
    expect(locks.waiting(GROUP)).toBe(0);
    a.leave();
    await settle();
    expect(b.log).toEqual(['followed a']);
    expect(b.refused).not.toHaveBeenCalled();
  });

  it('answers a claim from a tab without Web Locks, and ignores another leader', async () => {
    const a = withLocks('a');
    a.election.start();
    await settle();
    a.election.receive({ type: 'claim', from: '0' });
    expect(a.posted).toEqual([{ type: 'leader' }, { type: 'leader' }]);
    a.election.receive({ type: 'leader', from: '0' });
    expect(a.log).toEqual(['elected']); // the lock allows one leader: no stepping down
    expect(a.election.leading).toBe(true);
  });

  it('tells its tab of each new leader once', () => {
    const b = withLocks('b');
    b.welcome('a');
    b.election.receive({ type: 'leader', from: 'a' });
    b.election.receive({ type: 'bye', from: 'a' });
    b.election.receive({ type: 'leader', from: 'c' });
    b.welcome('c');
    expect(b.log).toEqual(['followed a', 'followed c']);
  });

  it('reports a refused lock request, rather than leave the tab without a leader', async () => {
    const failing: LockManagerLike = {
      request: () => Promise.reject(new DOMException('opaque origin', 'SecurityError')),
    };
    const a = withLocks('a', failing);
    a.election.start();
    await settle();
    expect(a.refused).toHaveBeenCalledOnce();
    expect(a.log).toEqual([]);
  });
});
