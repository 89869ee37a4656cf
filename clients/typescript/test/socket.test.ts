import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { NotificationsSocket } from '../src/socket.js';
import type { ConnectionState, ServerEvent } from '../src/types.js';
import { FakeLifecycle, FakeWebSocket } from './fakes.js';

const snapshot = { event: 'snapshot', payload: [] };

function setup(random = () => 0.5) {
  const events: ServerEvent[] = [];
  const states: ConnectionState[] = [];
  const tokens: boolean[] = [];
  const lifecycle = new FakeLifecycle();
  let now = 0;
  const socket = new NotificationsSocket({
    baseUrl: 'https://app.example',
    getToken: ({ refresh }) => {
      tokens.push(refresh);
      return refresh ? 'fresh-token' : 'token';
    },
    onEvent: (event) => events.push(event),
    onStateChange: (state) => states.push(state),
    createWebSocket: (url) => new FakeWebSocket(url),
    lifecycle,
    random,
    now: () => now,
  });
  return { socket, events, states, tokens, lifecycle, advance: (ms: number) => (now += ms) };
}

/** Let the token promise resolve, so the next FakeWebSocket exists. */
const settle = () => vi.advanceTimersByTimeAsync(0);

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.created = [];
});
afterEach(() => vi.useRealTimers());

describe('NotificationsSocket', () => {
  it('connects to the socket path with the token in the query, encoded', async () => {
    const { socket } = setup();
    socket.connect();
    await settle();
    expect(FakeWebSocket.latest().url).toBe(
      'wss://app.example/api/v1/notifications/ws?token=token',
    );
  });

  it('backs off 1, 2, 5, 10, 20, 30, 30 s while connections fail', async () => {
    const { socket } = setup();
    socket.connect();
    await settle();
    const delays: number[] = [];
    for (let attempt = 0; attempt < 7; attempt += 1) {
      const before = FakeWebSocket.created.length;
      FakeWebSocket.latest().serverClose(1006);
      let waited = 0;
      while (FakeWebSocket.created.length === before) {
        await vi.advanceTimersByTimeAsync(100);
        waited += 100;
      }
      delays.push(waited);
    }
    expect(delays).toEqual([1000, 2000, 5000, 10000, 20000, 30000, 30000]);
  });

  it('jitters each delay by at most a fifth', async () => {
    const { socket } = setup(() => 0);
    socket.connect();
    await settle();
    FakeWebSocket.latest().serverClose(1006);
    await vi.advanceTimersByTimeAsync(799);
    expect(FakeWebSocket.created).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('resets the backoff only after a snapshot, not when a socket merely opens', async () => {
    const { socket } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().serverClose(1006);
    await vi.advanceTimersByTimeAsync(1000);
    const opened = FakeWebSocket.latest();
    opened.open();
    opened.serverClose(4401);
    await vi.advanceTimersByTimeAsync(1999);
    expect(FakeWebSocket.created).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    const third = FakeWebSocket.latest();
    third.open();
    third.receive(snapshot);
    third.serverClose(1012);
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWebSocket.created).toHaveLength(4);
  });

  it('asks for a fresh token after 4401, and a cached one otherwise', async () => {
    const { socket, tokens } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().serverClose(4401);
    await vi.advanceTimersByTimeAsync(1000);
    expect(tokens).toEqual([false, true]);
    expect(FakeWebSocket.latest().token).toBe('fresh-token');
    FakeWebSocket.latest().serverClose(1006);
    await vi.advanceTimersByTimeAsync(2000);
    expect(tokens).toEqual([false, true, false]);
  });

  it('never reconnects after close()', async () => {
    const { socket, states } = setup();
    socket.connect();
    await settle();
    const ws = FakeWebSocket.latest();
    socket.close();
    expect(ws.closedWith).toBe(1000);
    ws.serverClose(1000);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(states.at(-1)).toBe('closed');
  });

  it('does not open a socket when close() comes while the token is being fetched', async () => {
    const { socket } = setup();
    socket.connect();
    socket.close();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(0);
  });

  it('pings every 30 s while open', async () => {
    const { socket } = setup();
    socket.connect();
    await settle();
    const ws = FakeWebSocket.latest();
    ws.open();
    await vi.advanceTimersByTimeAsync(90_000);
    expect(ws.sent).toEqual(['ping', 'ping', 'ping']);
  });

  it('reconnects at once when the browser comes back online', async () => {
    const { socket, lifecycle } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().serverClose(1006);
    FakeWebSocket.latest().serverClose(1006);
    lifecycle.emit('online');
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('reconnects when a tab becomes visible after a long sleep, not after a short one', async () => {
    const { socket, lifecycle, advance } = setup();
    socket.connect();
    await settle();
    const ws = FakeWebSocket.latest();
    ws.open();
    ws.receive(snapshot);
    lifecycle.visible = false;
    lifecycle.emit('visibilitychange');
    advance(5_000);
    lifecycle.visible = true;
    lifecycle.emit('visibilitychange');
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    lifecycle.visible = false;
    lifecycle.emit('visibilitychange');
    advance(10 * 60_000);
    lifecycle.visible = true;
    lifecycle.emit('visibilitychange');
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    expect(ws.closedWith).toBe(1000);
  });

  it('exposes its state: connecting, open on snapshot, reconnecting, stopped on 4403', async () => {
    const { socket, states } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    FakeWebSocket.latest().serverClose(1012);
    await vi.advanceTimersByTimeAsync(1000);
    FakeWebSocket.latest().serverClose(4403);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(states).toEqual(['connecting', 'open', 'reconnecting', 'connecting', 'stopped']);
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('hands every parsed frame to onEvent and ignores what is not JSON', async () => {
    const { socket, events } = setup();
    socket.connect();
    await settle();
    const ws = FakeWebSocket.latest();
    ws.onmessage?.({ data: 'not json' } as MessageEvent);
    ws.receive({ event: 'unread_count.updated', payload: { count: 3 } });
    expect(events).toEqual([{ event: 'unread_count.updated', payload: { count: 3 } }]);
  });

  it('works without window or document (server-side rendering, workers)', () => {
    const socket = new NotificationsSocket({
      baseUrl: 'http://x',
      getToken: () => 't',
      onEvent: () => undefined,
      createWebSocket: (url) => new FakeWebSocket(url),
    });
    expect(() => {
      socket.connect();
      socket.close();
    }).not.toThrow();
  });
});
