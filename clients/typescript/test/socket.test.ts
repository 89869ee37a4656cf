import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { NotificationsSocket, type SocketOptions, UnauthorizedError } from '../src/socket.js';
import type { ConnectionState, ServerEvent } from '../src/types.js';
import { FakeLifecycle, FakeWebSocket } from './fakes.js';

const snapshot = { event: 'snapshot', payload: [] };

function setup(random = () => 0.5, options: Partial<SocketOptions> = {}) {
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
    ...options,
  });
  return { socket, events, states, tokens, lifecycle, advance: (ms: number) => (now += ms) };
}

/** Connect and receive the opening frames: the socket is `open`. */
async function live(socket: NotificationsSocket): Promise<FakeWebSocket> {
  socket.connect();
  await settle();
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.receive(snapshot);
  return ws;
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

  it('sends no ping on a timer (the server keepalive is the heartbeat); ping() asks for one', async () => {
    const { socket } = setup();
    socket.connect();
    await settle();
    const ws = FakeWebSocket.latest();
    expect(socket.ping()).toBe(false);
    ws.open();
    ws.receive(snapshot);
    await vi.advanceTimersByTimeAsync(50_000);
    expect(ws.sent).toEqual([]);
    expect(socket.ping()).toBe(true);
    expect(ws.sent).toEqual(['ping']);
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

describe('NotificationsSocket watchdog', () => {
  const keepalive = { event: 'keepalive', payload: {} };

  it('drops a socket silent for two keepalives and a margin (60 s at 25 s) and reconnects', async () => {
    const { socket, states } = setup();
    const ws = await live(socket);
    await vi.advanceTimersByTimeAsync(59_999);
    expect(socket.state).toBe('open');
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.closedWith).toBe(1000);
    expect(states.at(-1)).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(1000); // the first backoff step: the snapshot reset it
    expect(FakeWebSocket.created).toHaveLength(2);
    expect(states.at(-1)).toBe('connecting');
  });

  it('stays open while any frame keeps coming', async () => {
    const { socket } = setup();
    const ws = await live(socket);
    for (let period = 0; period < 10; period += 1) {
      await vi.advanceTimersByTimeAsync(25_000);
      ws.receive(keepalive);
    }
    await vi.advanceTimersByTimeAsync(40_000);
    ws.onmessage?.({ data: 'not even JSON' } as MessageEvent);
    await vi.advanceTimersByTimeAsync(40_000);
    expect(socket.state).toBe('open');
    expect(FakeWebSocket.created).toHaveLength(1);
  });

  it('follows the keepalive it is given: 5 s of silence at a 2 s keepalive', async () => {
    const { socket } = setup(() => 0.5, { keepaliveMs: 2_000 });
    const ws = await live(socket);
    await vi.advanceTimersByTimeAsync(4_999);
    expect(socket.state).toBe('open');
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.closedWith).toBe(1000);
    expect(socket.state).toBe('reconnecting');
  });

  it('also gives up on a handshake that never answers', async () => {
    const { socket } = setup(() => 0.5, { keepaliveMs: 2_000 });
    socket.connect();
    await settle();
    const hanging = FakeWebSocket.latest();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(hanging.closedWith).toBe(1000);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('ignores a late close event of the socket it dropped', async () => {
    const { socket } = setup();
    const ws = await live(socket);
    await vi.advanceTimersByTimeAsync(60_000);
    ws.serverClose(1006);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(FakeWebSocket.created).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(FakeWebSocket.created).toHaveLength(2);
  });
});

describe('NotificationsSocket offline and online', () => {
  it('drops the socket when the browser goes offline, and reconnects at once when online', async () => {
    const { socket, lifecycle } = setup();
    const ws = await live(socket);
    lifecycle.emit('offline');
    expect(ws.closedWith).toBe(1000);
    expect(socket.state).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(500);
    expect(FakeWebSocket.created).toHaveLength(1);
    lifecycle.emit('online');
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('keeps retrying with the usual backoff while offline', async () => {
    const { socket, lifecycle } = setup();
    await live(socket);
    lifecycle.emit('offline');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(FakeWebSocket.created).toHaveLength(2);
    FakeWebSocket.latest().serverClose(1006);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(FakeWebSocket.created).toHaveLength(3);
  });
});

describe('NotificationsSocket unauthorized', () => {
  it('stops in unauthorized when the refreshed token is refused too', async () => {
    const { socket, states, tokens } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().serverClose(4401);
    await vi.advanceTimersByTimeAsync(1_000);
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().serverClose(4401);
    expect(socket.state).toBe('unauthorized');
    expect(socket.authError).toBeInstanceOf(UnauthorizedError);
    expect(socket.authError?.reason).toBe('token_refused');
    expect(states.at(-1)).toBe('unauthorized');
    expect(tokens).toEqual([false, true]);
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('refreshes again when a fresh token expires on a live socket', async () => {
    const { socket, tokens } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().serverClose(4401);
    await vi.advanceTimersByTimeAsync(1_000);
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    FakeWebSocket.latest().serverClose(4401); // its exp passed
    await vi.advanceTimersByTimeAsync(1_000);
    expect(socket.state).toBe('connecting');
    expect(tokens).toEqual([false, true, true]);
    expect(FakeWebSocket.created).toHaveLength(3);
  });

  it('stops in unauthorized when getToken throws, with what it threw', async () => {
    const failure = new Error('session ended');
    const { socket } = setup(() => 0.5, {
      getToken: () => {
        throw failure;
      },
    });
    socket.connect();
    await settle();
    expect(socket.state).toBe('unauthorized');
    expect(socket.authError?.reason).toBe('token_unavailable');
    expect(socket.authError?.cause).toBe(failure);
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(FakeWebSocket.created).toHaveLength(0);
  });

  it('passes the error to onStateChange', async () => {
    const seen: [ConnectionState, UnauthorizedError | null][] = [];
    const { socket } = setup(() => 0.5, {
      getToken: () => Promise.reject(new Error('no session')),
      onStateChange: (state, error) => seen.push([state, error]),
    });
    socket.connect();
    await settle();
    expect(seen).toEqual([
      ['connecting', null],
      ['unauthorized', socket.authError],
    ]);
  });

  it('does not reconnect in unauthorized when online or visible again', async () => {
    const { socket, lifecycle } = setup(() => 0.5, {
      getToken: () => Promise.reject(new Error('x')),
    });
    socket.connect();
    await settle();
    lifecycle.emit('online');
    lifecycle.visible = false;
    lifecycle.emit('visibilitychange');
    lifecycle.visible = true;
    lifecycle.emit('visibilitychange');
    await settle();
    expect(socket.state).toBe('unauthorized');
  });

  it('retryNow() leaves unauthorized at once with a fresh token', async () => {
    let signedIn = false;
    const tokens: boolean[] = [];
    const { socket } = setup(() => 0.5, {
      getToken: ({ refresh }) => {
        tokens.push(refresh);
        if (!signedIn) throw new Error('signed out');
        return 'new-session';
      },
    });
    socket.connect();
    await settle();
    expect(socket.state).toBe('unauthorized');
    signedIn = true;
    socket.retryNow();
    await settle();
    expect(tokens).toEqual([false, true]);
    expect(socket.state).toBe('connecting');
    expect(socket.authError).toBeNull();
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    expect(socket.state).toBe('open');
  });

  it('retryNow() with a token that is refused again is unauthorized at once', async () => {
    const { socket } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().serverClose(4401);
    await vi.advanceTimersByTimeAsync(1_000);
    FakeWebSocket.latest().serverClose(4401);
    socket.retryNow();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(3);
    expect(FakeWebSocket.latest().token).toBe('fresh-token');
    FakeWebSocket.latest().serverClose(4401);
    expect(socket.state).toBe('unauthorized');
  });

  it('markUnauthorized() (a REST 401 after a refresh) closes the socket and waits', async () => {
    const { socket } = setup();
    const ws = await live(socket);
    socket.markUnauthorized(new Error('401'));
    expect(ws.closedWith).toBe(1000);
    expect(socket.state).toBe('unauthorized');
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(FakeWebSocket.created).toHaveLength(1);
  });
});

describe('NotificationsSocket retryNow', () => {
  it('skips the backoff wait while reconnecting', async () => {
    const { socket } = setup();
    socket.connect();
    await settle();
    for (let i = 0; i < 4; i += 1) {
      FakeWebSocket.latest().serverClose(1006);
      await vi.advanceTimersByTimeAsync(30_000);
    }
    FakeWebSocket.latest().serverClose(1006); // the next try is 20 s away
    socket.retryNow();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(6);
  });

  it('replaces a live socket on demand', async () => {
    const { socket } = setup();
    const ws = await live(socket);
    socket.retryNow();
    await settle();
    expect(ws.closedWith).toBe(1000);
    expect(FakeWebSocket.created).toHaveLength(2);
  });

  it('does nothing after close()', async () => {
    const { socket } = setup();
    await live(socket);
    socket.close();
    socket.retryNow();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(socket.state).toBe('closed');
  });
});
