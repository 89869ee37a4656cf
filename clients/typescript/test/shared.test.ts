import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import type { LockManagerLike } from '../src/shared.js';
import {
  HIDDEN_GRACE_MS,
  REPLAY_LIMIT,
  SharedSocket,
  type SharedSocketOptions,
} from '../src/shared.js';
import { UnauthorizedError } from '../src/socket.js';
import type { ConnectionState, ServerEvent } from '../src/types.js';
import { FakeLifecycle, FakeWebSocket, item } from './fakes.js';
import { FakeChannelHub, FakeLockManager } from './tab-fakes.js';

const CHANNEL = 'campana:https://app.example:user-1';
const snapshot: ServerEvent = { event: 'snapshot', payload: [] };
const count = (n: number): ServerEvent => ({
  event: 'unread_count.updated',
  payload: { count: n },
});

let hub: FakeChannelHub;
let locks: FakeLockManager;

/** One browser tab: its SharedSocket and what its notification center would have seen. */
function tab(tabId: string, options: Partial<SharedSocketOptions> = {}) {
  const events: ServerEvent[] = [];
  const states: ConnectionState[] = [];
  const authErrors: (UnauthorizedError | null)[] = [];
  const lifecycle = new FakeLifecycle();
  const socket = new SharedSocket({
    baseUrl: 'https://app.example',
    getToken: () => 'token',
    onEvent: (event) => events.push(event),
    onStateChange: (state, authError) => {
      states.push(state);
      authErrors.push(authError);
    },
    createWebSocket: (url) => new FakeWebSocket(url),
    lifecycle,
    channelName: CHANNEL,
    createChannel: hub.create,
    locks,
    tabId,
    ...options,
  });
  const hide = (hidden: boolean) => {
    lifecycle.visible = !hidden;
    lifecycle.emit('visibilitychange');
  };
  return { socket, events, states, authErrors, lifecycle, hide };
}

/**
 * Let locks be granted, tokens resolve and messages (and the answers to them) arrive: 10 ms,
 * as a timer of 0 ms set by a timer runs 1 ms later under fake timers.
 */
async function settle(): Promise<void> {
  for (let hop = 0; hop < 10; hop += 1) await vi.advanceTimersByTimeAsync(1);
}

/** The latest socket opens and sends its snapshot. */
async function snapshotArrives(): Promise<FakeWebSocket> {
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.receive(snapshot);
  await settle();
  return ws;
}

/** Tabs `a` and `b` joined, and the leader's socket open past its snapshot. */
async function twoLiveTabs(options: Partial<SharedSocketOptions> = {}) {
  const a = tab('a', options);
  const b = tab('b', options);
  a.socket.connect();
  b.socket.connect();
  await settle();
  const ws = await snapshotArrives();
  return { a, b, ws };
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.created = [];
  hub = new FakeChannelHub();
  locks = new FakeLockManager();
});
afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe('SharedSocket with Web Locks', () => {
  it('opens one socket for two tabs, and both receive its frames and state', async () => {
    const a = tab('a');
    const b = tab('b');
    a.socket.connect();
    b.socket.connect();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    const ws = await snapshotArrives();
    const created: ServerEvent = { event: 'notification.created', payload: item() };
    ws.receive(created);
    await settle();
    expect(a.events).toEqual([snapshot, created]);
    expect(b.events).toEqual([snapshot, created]);
    expect(a.socket.state).toBe('open');
    expect(b.socket.state).toBe('open');
    expect(b.states).toEqual(['connecting', 'open']);
  });

  it('replays the snapshot and the events after it, and the state, to a tab that joins late', async () => {
    const a = tab('a');
    a.socket.connect();
    await settle();
    const ws = await snapshotArrives();
    const created: ServerEvent = { event: 'notification.created', payload: item() };
    ws.receive(created);
    ws.receive({ event: 'keepalive', payload: {} });
    ws.receive(count(1));
    const b = tab('b');
    b.socket.connect();
    await settle();
    expect(b.events).toEqual([snapshot, created, count(1)]);
    expect(b.socket.state).toBe('open');
    expect(FakeWebSocket.created).toHaveLength(1);
  });

  it('starts the replay again at each snapshot', async () => {
    const a = tab('a');
    a.socket.connect();
    await settle();
    const ws = await snapshotArrives();
    ws.receive(count(3));
    const second: ServerEvent = { event: 'snapshot', payload: [item()] };
    ws.receive(second);
    const b = tab('b');
    b.socket.connect();
    await settle();
    expect(b.events).toEqual([second]);
  });

  it(`drops a replay longer than ${REPLAY_LIMIT} events, and reconnects when a tab joins`, async () => {
    const a = tab('a');
    a.socket.connect();
    await settle();
    const ws = await snapshotArrives();
    for (let n = 0; n <= REPLAY_LIMIT; n += 1) ws.receive(count(n));
    const b = tab('b');
    b.socket.connect();
    await settle();
    expect(b.events).toEqual([]); // nothing stale: the new snapshot comes to every tab
    expect(ws.closedWith).toBe(1000);
    expect(FakeWebSocket.created).toHaveLength(2);
    await snapshotArrives();
    expect(b.events).toEqual([snapshot]);
    expect(b.socket.state).toBe('open');
  });

  it('hands over within a second when the leader closes: the next tab opens its socket', async () => {
    const a = tab('a');
    const b = tab('b');
    const c = tab('c');
    for (const t of [a, b, c]) t.socket.connect();
    await settle();
    const first = await snapshotArrives();
    a.socket.close();
    expect(first.closedWith).toBe(1000);
    expect(a.socket.state).toBe('closed');
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWebSocket.created).toHaveLength(2);
    const second = await snapshotArrives();
    const created: ServerEvent = { event: 'notification.created', payload: item() };
    second.receive(created);
    await settle();
    expect(b.events).toEqual([snapshot, snapshot, created]);
    expect(c.events).toEqual([snapshot, snapshot, created]);
    expect(a.events).toEqual([snapshot]);
    expect(c.states.at(-1)).toBe('open');
    expect(b.states).not.toContain('closed'); // the old leader's close is its own
  });

  it('sends a follower’s retryNow to the leader, whose socket reconnects', async () => {
    const { b, ws } = await twoLiveTabs();
    b.socket.retryNow();
    await settle();
    expect(ws.closedWith).toBe(1000);
    expect(FakeWebSocket.created).toHaveLength(2);
    expect(b.socket.state).toBe('connecting');
  });

  it('sends a follower’s markUnauthorized to the leader; every tab shows unauthorized', async () => {
    const { a, b, ws } = await twoLiveTabs();
    b.socket.markUnauthorized(new Error('401 twice'));
    await settle();
    expect(ws.closedWith).toBe(1000);
    for (const t of [a, b]) {
      expect(t.socket.state).toBe('unauthorized');
      expect(t.socket.authError).toBeInstanceOf(UnauthorizedError);
      expect(t.socket.authError?.reason).toBe('token_refused');
    }
    b.socket.retryNow(); // the way out, from any tab
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    expect(a.socket.state).toBe('connecting');
  });

  it('lets the socket go when every tab was hidden for the grace, and reconnects when one shows', async () => {
    const { a, b, ws } = await twoLiveTabs({ hiddenGraceMs: 20_000 });
    a.hide(true);
    b.hide(true);
    await vi.advanceTimersByTimeAsync(20_000 - 100);
    expect(ws.closedWith).toBeUndefined();
    await vi.advanceTimersByTimeAsync(100);
    expect(ws.closedWith).toBe(1000);
    expect(a.socket.state).toBe('idle');
    await settle();
    expect(b.socket.state).toBe('idle');
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(FakeWebSocket.created).toHaveLength(1);
    b.hide(false); // the follower shows: the leader reconnects
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    await snapshotArrives();
    expect(a.socket.state).toBe('open');
    expect(b.events).toEqual([snapshot, snapshot]);
  });

  it(`waits ${HIDDEN_GRACE_MS / 1000} s by default`, async () => {
    const a = tab('a');
    a.socket.connect();
    a.hide(true);
    await settle();
    const ws = await snapshotArrives();
    for (let waited = 0; waited < HIDDEN_GRACE_MS - 20_000; waited += 20_000) {
      await vi.advanceTimersByTimeAsync(20_000);
      ws.receive({ event: 'keepalive', payload: {} });
    }
    expect(ws.closedWith).toBeUndefined();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(ws.closedWith).toBe(1000);
    expect(a.socket.state).toBe('idle');
  });

  it('skips the backoff when a follower is shown, as a tab of its own would', async () => {
    const a = tab('a');
    const b = tab('b');
    a.socket.connect();
    b.socket.connect();
    await settle();
    b.hide(true);
    await settle();
    FakeWebSocket.latest().serverClose(4429);
    await settle();
    expect(b.socket.state).toBe('stopped');
    b.hide(false);
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    expect(b.socket.state).toBe('connecting');
  });

  it('keeps the socket while one tab is visible, and counts the grace from the last one hidden', async () => {
    const { a, b, ws } = await twoLiveTabs({ hiddenGraceMs: 5_000 });
    a.hide(true);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(ws.closedWith).toBeUndefined();
    b.hide(true);
    await vi.advanceTimersByTimeAsync(3_000);
    b.hide(false);
    b.hide(true);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(ws.closedWith).toBeUndefined();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(ws.closedWith).toBe(1000);
  });

  it('reconnects after a release when a visible tab joins', async () => {
    const a = tab('a', { hiddenGraceMs: 1_000 });
    a.socket.connect();
    a.hide(true);
    await settle();
    await snapshotArrives();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(a.socket.state).toBe('idle');
    const b = tab('b');
    b.socket.connect();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    await snapshotArrives();
    expect(b.events).toEqual([snapshot]);
    expect(b.socket.state).toBe('open');
  });

  it('leaves cleanly on close(), and joins again on connect()', async () => {
    const { a, b } = await twoLiveTabs();
    b.socket.close();
    await settle();
    expect(b.socket.state).toBe('closed');
    expect(locks.waiting(CHANNEL)).toBe(0);
    FakeWebSocket.latest().receive(count(2));
    await settle();
    expect(b.events).toEqual([snapshot]);
    b.socket.connect();
    await settle();
    expect(b.events).toEqual([snapshot, snapshot, count(2)]);
    expect(b.socket.state).toBe('open');

    a.socket.close();
    b.socket.close();
    await settle();
    expect(locks.isHeld(CHANNEL)).toBe(false);
    a.socket.connect();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    await snapshotArrives();
    expect(a.socket.state).toBe('open');
  });

  it('touches nothing before connect()', () => {
    const createChannel = vi.fn(hub.create);
    const a = tab('a', { createChannel });
    expect(a.socket.state).toBe('idle');
    expect(createChannel).not.toHaveBeenCalled();
  });
});

describe('SharedSocket without Web Locks', () => {
  const noLocks = { locks: null };

  it('elects one leader by heartbeat, and hands over within a second when it closes', async () => {
    const a = tab('a', noLocks);
    const b = tab('b', noLocks);
    const c = tab('c', noLocks);
    a.socket.connect();
    await vi.advanceTimersByTimeAsync(500);
    expect(FakeWebSocket.created).toHaveLength(1);
    b.socket.connect();
    c.socket.connect();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(FakeWebSocket.created).toHaveLength(1);
    const first = await snapshotArrives();
    expect(c.events).toEqual([snapshot]);
    a.socket.close();
    expect(first.closedWith).toBe(1000);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(FakeWebSocket.created).toHaveLength(2);
    const second = await snapshotArrives();
    second.receive(count(4));
    await settle();
    expect(b.events).toEqual([snapshot, snapshot, count(4)]);
    expect(c.events).toEqual([snapshot, snapshot, count(4)]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('breaks a tie between tabs that start together: the lowest tab id leads', async () => {
    const b = tab('b', noLocks);
    const a = tab('a', noLocks);
    b.socket.connect();
    a.socket.connect();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(FakeWebSocket.created).toHaveLength(1);
    await snapshotArrives();
    expect(b.events).toEqual([snapshot]);
    expect(a.events).toEqual([snapshot]);
  });

  it('takes over from a leader that falls silent', async () => {
    const a = tab('a', noLocks);
    const b = tab('b', noLocks);
    a.socket.connect();
    b.socket.connect();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(FakeWebSocket.created).toHaveLength(1);
    hub.muted.add('a'); // frozen or crashed: no bye
    await vi.advanceTimersByTimeAsync(1_500);
    expect(FakeWebSocket.created).toHaveLength(2);
    await snapshotArrives();
    expect(b.socket.state).toBe('open');
  });

  it('a second leader after a race steps down to the lower tab id', async () => {
    const a = tab('a', noLocks);
    const b = tab('b', noLocks);
    hub.muted.add('a');
    hub.muted.add('b');
    a.socket.connect();
    b.socket.connect();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(FakeWebSocket.created).toHaveLength(2); // each believes it is alone
    hub.muted.clear();
    await vi.advanceTimersByTimeAsync(500);
    const [fromA, fromB] = FakeWebSocket.created;
    expect(fromA?.closedWith).toBeUndefined();
    expect(fromB?.closedWith).toBe(1000);
    fromA?.open();
    fromA?.receive(snapshot);
    await settle();
    expect(b.events).toEqual([snapshot]);
  });
});

describe('SharedSocket without BroadcastChannel', () => {
  it('opens a socket per tab, as NotificationsSocket does', async () => {
    vi.stubGlobal('BroadcastChannel', undefined);
    const a = tab('a', { createChannel: undefined, locks: undefined });
    const b = tab('b', { createChannel: undefined, locks: undefined });
    a.socket.connect();
    b.socket.connect();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    const [first, second] = FakeWebSocket.created;
    first?.open();
    first?.receive(snapshot);
    expect(a.events).toEqual([snapshot]);
    expect(b.events).toEqual([]);
    expect(a.socket.state).toBe('open');
    expect(b.socket.state).toBe('connecting');
    b.socket.retryNow();
    await settle();
    expect(second?.closedWith).toBe(1000);
    a.socket.close();
    expect(first?.closedWith).toBe(1000);
    expect(a.socket.state).toBe('closed');
    a.socket.connect();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(4);
  });
});

describe('SharedSocket, signed out and odd browsers', () => {
  it('stays signed out through the hidden-tab release: showing a tab does not reconnect', async () => {
    const getToken = vi.fn(() => 'token');
    const { a, b } = await twoLiveTabs({ hiddenGraceMs: 1_000, getToken });
    b.socket.markUnauthorized(new Error('REST: 401 to the refreshed token'));
    await settle();
    expect(b.socket.state).toBe('unauthorized');
    const tokensBefore = getToken.mock.calls.length;
    a.hide(true);
    b.hide(true);
    await vi.advanceTimersByTimeAsync(1_000);
    await settle();
    b.hide(false);
    await settle();
    expect(b.socket.state).toBe('unauthorized');
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(getToken.mock.calls.length).toBe(tokensBefore); // not even a token was asked for
  });

  it('stays signed out across a hand-over: the next leader does not reconnect on its own', async () => {
    const { a, b } = await twoLiveTabs();
    a.socket.markUnauthorized(new Error('signed out'));
    await settle();
    expect(b.socket.state).toBe('unauthorized');
    a.socket.close();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(b.socket.state).toBe('unauthorized');
  });

  it('keeps a socket other tabs kept busy when its tab is shown after a minute in the background', async () => {
    const { a, ws } = await twoLiveTabs();
    a.hide(true); // the user works in tab b; the socket stays live (b is visible)
    for (let t = 0; t < 4; t += 1) {
      await vi.advanceTimersByTimeAsync(20_000);
      ws.receive({ event: 'keepalive', payload: {} });
    }
    a.hide(false); // back to tab a
    await settle();
    expect(ws.closedWith).toBeUndefined();
    expect(FakeWebSocket.created).toHaveLength(1);
  });

  it('elects by heartbeat when the lock request fails, rather than leave the tab without a socket', async () => {
    const failing: LockManagerLike = {
      request: () => Promise.reject(new DOMException('opaque origin', 'SecurityError')),
    };
    const a = tab('a', { locks: failing });
    a.socket.connect();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(FakeWebSocket.created).toHaveLength(1);
  });

  it('close() leaves no timer behind', async () => {
    const a = tab('a', { locks: null });
    const b = tab('b', { locks: null });
    a.socket.connect();
    b.socket.connect();
    await vi.advanceTimersByTimeAsync(2_000);
    await snapshotArrives();
    a.hide(true);
    b.hide(true);
    await settle();
    a.socket.close();
    b.socket.close();
    await settle();
    expect(vi.getTimerCount()).toBe(0);
  });
});
