import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { NotificationsSocket, type SocketOptions, UnauthorizedError } from '../src/socket.js';
import { SignedOutError } from '../src/token.js';
import type { ConnectionState, GetToken, ServerEvent } from '../src/types.js';
import { FakeLifecycle, FakeWebSocket, jwt } from './fakes.js';

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

  it('asks for per-type counts with counts=1 only when told to', async () => {
    const { socket } = setup(undefined, { counts: true });
    socket.connect();
    await settle();
    expect(FakeWebSocket.latest().url).toBe(
      'wss://app.example/api/v1/notifications/ws?token=token&counts=1',
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

  it('exposes its state: connecting, open on snapshot, reconnecting, stopped on 4429', async () => {
    const { socket, states } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    FakeWebSocket.latest().serverClose(1012);
    await vi.advanceTimersByTimeAsync(1000);
    FakeWebSocket.latest().serverClose(4429);
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
    lifecycle.online = false;
    lifecycle.emit('offline');
    expect(ws.closedWith).toBe(1000);
    expect(socket.state).toBe('offline');
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

  it('stops in unauthorized when getToken throws SignedOutError, with what it threw', async () => {
    const failure = new SignedOutError('session ended');
    const { socket } = setup(() => 0.5, {
      getToken: () => {
        throw failure;
      },
    });
    socket.connect();
    await settle();
    expect(socket.state).toBe('unauthorized');
    expect(socket.authError?.reason).toBe('signed_out');
    expect(socket.authError?.cause).toBe(failure);
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(FakeWebSocket.created).toHaveLength(0);
  });

  it('stops in unauthorized at once when getToken returns null', async () => {
    const { socket } = setup(() => 0.5, { getToken: async () => null });
    socket.connect();
    await settle();
    expect(socket.state).toBe('unauthorized');
    expect(socket.authError?.message).toBe('getToken returned null');
    expect(FakeWebSocket.created).toHaveLength(0);
  });

  it('passes the error to onStateChange', async () => {
    const seen: [ConnectionState, UnauthorizedError | null][] = [];
    const { socket } = setup(() => 0.5, {
      getToken: () => Promise.reject(new SignedOutError()),
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
    const { socket, lifecycle } = setup(() => 0.5, { getToken: () => null });
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
        return signedIn ? 'new-session' : null;
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

  it('says in the error and the console when a refused fresh token has no exp', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const { socket } = setup();
    socket.connect();
    await settle();
    FakeWebSocket.latest().serverClose(4401);
    await vi.advanceTimersByTimeAsync(1_000);
    FakeWebSocket.latest().serverClose(4401);
    expect(socket.authError?.message).toMatch(/no readable `exp` claim/);
    expect(warn).toHaveBeenCalledTimes(1);
    warn.mockRestore();
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

describe('NotificationsSocket when getToken fails for a while', () => {
  /** A getToken the test breaks and mends; `calls` counts its calls. */
  function flakyToken() {
    const endpoint = { down: true, calls: 0 };
    const getToken = () => {
      endpoint.calls += 1;
      if (endpoint.down) return Promise.reject(new TypeError('Failed to fetch'));
      return 'token';
    };
    return { endpoint, getToken };
  }

  it('backs off 1, 2, 5, 10 s as for a socket, shows reconnecting, and recovers by itself', async () => {
    const { endpoint, getToken } = flakyToken();
    const { socket, states } = setup(() => 0.5, { getToken });
    socket.connect();
    await settle();
    expect(socket.state).toBe('reconnecting');
    const callsAt: number[] = [];
    for (let second = 1; second <= 18; second += 1) {
      const before = endpoint.calls;
      await vi.advanceTimersByTimeAsync(1_000);
      if (endpoint.calls > before) callsAt.push(second);
    }
    expect(callsAt).toEqual([1, 3, 8, 18]); // waits of 1, 2, 5 and 10 s
    expect(states).not.toContain('unauthorized');
    endpoint.down = false;
    await vi.advanceTimersByTimeAsync(20_000);
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    expect(socket.state).toBe('open');
  });

  it('counts a getToken that never answers as failed after the token timeout', async () => {
    const { socket } = setup(() => 0.5, {
      getToken: () => new Promise<string>(() => undefined),
      tokenTimeoutMs: 3_000,
    });
    socket.connect();
    await settle();
    expect(socket.state).toBe('connecting');
    await vi.advanceTimersByTimeAsync(3_000);
    expect(socket.state).toBe('reconnecting');
  });

  it('shows offline while the browser is, and tries again at once when it is back online', async () => {
    const { endpoint, getToken } = flakyToken();
    endpoint.down = false;
    const { socket, lifecycle } = setup(() => 0.5, { getToken });
    await live(socket);
    lifecycle.online = false;
    lifecycle.emit('offline');
    endpoint.down = true;
    expect(socket.state).toBe('offline');
    await vi.advanceTimersByTimeAsync(20_000); // attempts go on, and fail, while offline
    expect(socket.state).toBe('offline');
    expect(endpoint.calls).toBeGreaterThan(2);
    lifecycle.online = true;
    endpoint.down = false;
    lifecycle.emit('online');
    await settle();
    expect(socket.state).toBe('connecting');
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    expect(socket.state).toBe('open');
  });

  it('tries again at once when the tab is shown', async () => {
    const { endpoint, getToken } = flakyToken();
    const { socket, lifecycle } = setup(() => 0.5, { getToken });
    socket.connect();
    await settle();
    for (let i = 0; i < 3; i += 1) await vi.advanceTimersByTimeAsync(10_000);
    endpoint.down = false;
    lifecycle.visible = false;
    lifecycle.emit('visibilitychange');
    lifecycle.visible = true;
    lifecycle.emit('visibilitychange');
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
  });

  it('keeps asking for a fresh token after a 4401 while the endpoint fails', async () => {
    const tokens: boolean[] = [];
    let down = false;
    const { socket } = setup(() => 0.5, {
      getToken: ({ refresh }) => {
        tokens.push(refresh);
        return down ? Promise.reject(new Error('503')) : 'token';
      },
    });
    await live(socket);
    down = true;
    FakeWebSocket.latest().serverClose(4401); // its exp passed
    await vi.advanceTimersByTimeAsync(1_000 + 2_000);
    down = false;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(tokens).toEqual([false, true, true, true]);
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    expect(socket.state).toBe('open');
  });
});

describe('NotificationsSocket and a refused origin', () => {
  it('stops in forbidden on 4403, says so once in the console, and only retryNow() retries', async () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const { socket, lifecycle } = setup();
    await live(socket);
    FakeWebSocket.latest().serverClose(4403);
    expect(socket.state).toBe('forbidden');
    lifecycle.emit('online');
    lifecycle.visible = false;
    lifecycle.emit('visibilitychange');
    lifecycle.visible = true;
    lifecycle.emit('visibilitychange');
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(error).toHaveBeenCalledTimes(1);
    expect(String(error.mock.calls[0]?.[0])).toMatch(/CAMPANA_ALLOWED_ORIGINS/);
    socket.retryNow();
    await settle();
    expect(FakeWebSocket.created).toHaveLength(2);
    error.mockRestore();
  });
});

describe('NotificationsSocket renews its token before it expires', () => {
  const T0 = 1_800_000_000_000; // ms; the tokens' claims are in seconds

  /**
   * getToken hands out 20 s tokens minted at the (fake) time; `use` replaces it, `down` makes
   * it fail as a token endpoint that answers 503 does.
   */
  function renewing() {
    vi.setSystemTime(T0);
    const tokens: boolean[] = [];
    const minted: string[] = [];
    const endpoint = { down: false, calls: 0 };
    const mint: GetToken = ({ refresh }) => {
      tokens.push(refresh);
      const iat = Math.floor(Date.now() / 1000);
      const token = jwt({ sub: 'u', iat, exp: iat + 20 });
      minted.push(token);
      return token;
    };
    let current = mint;
    const context = setup(() => 0.5, {
      now: () => Date.now(),
      getToken: (request) => {
        endpoint.calls += 1;
        return endpoint.down ? Promise.reject(new Error('503')) : current(request);
      },
    });
    const use = (getToken: GetToken) => (current = getToken);
    const advance = (ms: number) => vi.advanceTimersByTimeAsync(ms);
    return { ...context, tokens, minted, endpoint, use, advance };
  }

  it('opens the next socket halfway through a 20 s token and swaps at its snapshot, staying open', async () => {
    const { socket, states, tokens, events, advance } = renewing();
    const first = await live(socket);
    await advance(9_999);
    expect(FakeWebSocket.created).toHaveLength(1);
    await advance(1);
    expect(tokens).toEqual([false, true]);
    const second = FakeWebSocket.latest();
    expect(second).not.toBe(first);
    expect(first.closedWith).toBeUndefined(); // the old one carries on until the new one is live
    first.receive({ event: 'unread_count.updated', payload: { count: 1 } });
    second.receive({ event: 'keepalive', payload: {} }); // nothing counts before its snapshot
    second.open();
    second.receive(snapshot);
    expect(first.closedWith).toBe(1000);
    expect(events.map((e) => e.event)).toEqual(['snapshot', 'unread_count.updated', 'snapshot']);
    first.serverClose(4401); // late: ignored
    expect(states).toEqual(['connecting', 'open']);
  });

  it('stays open across five expiries', async () => {
    const { socket, states, advance } = renewing();
    await live(socket);
    for (let expiry = 0; expiry < 5; expiry += 1) {
      await advance(10_000);
      FakeWebSocket.latest().open();
      FakeWebSocket.latest().receive(snapshot);
    }
    await advance(5_000);
    expect(FakeWebSocket.created).toHaveLength(6);
    expect(FakeWebSocket.created.slice(0, 5).every((ws) => ws.closedWith === 1000)).toBe(true);
    expect(states).toEqual(['connecting', 'open']);
  });

  it('retries a failed renewal with backoff while the token lasts, then falls back to 4401', async () => {
    const { socket, states, tokens, endpoint, advance } = renewing();
    const first = await live(socket);
    endpoint.down = true;
    await advance(10_000); // renewal fails: retries at +1, +2, +5 s (10 s of life left)
    await advance(9_000);
    expect(endpoint.calls).toBe(1 + 4);
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(states).toEqual(['connecting', 'open']);
    first.serverClose(4401); // the server ends it at exp
    endpoint.down = false;
    await advance(1_000);
    expect(tokens.at(-1)).toBe(true);
    FakeWebSocket.latest().open();
    FakeWebSocket.latest().receive(snapshot);
    expect(socket.state).toBe('open');
  });

  it('is signed out when the renewed token is refused, or getToken says so', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const { socket, advance } = renewing();
    const first = await live(socket);
    await advance(10_000);
    FakeWebSocket.latest().serverClose(4401);
    expect(socket.state).toBe('unauthorized');
    expect(socket.authError?.reason).toBe('token_refused');
    expect(first.closedWith).toBe(1000);
    warn.mockRestore();

    const signedOut = renewing();
    await live(signedOut.socket);
    signedOut.use(() => null);
    await signedOut.advance(10_000);
    expect(signedOut.socket.state).toBe('unauthorized');
    expect(signedOut.socket.authError?.reason).toBe('signed_out');
  });

  it('does not swap to the same token again (a cache), and lets 4401 do it', async () => {
    const { socket, minted, use, advance } = renewing();
    await live(socket);
    use(() => minted[0] ?? '');
    await advance(19_000);
    expect(FakeWebSocket.created).toHaveLength(1);
  });

  it('lets the successor take over when the current socket drops before its snapshot', async () => {
    const { socket, states, advance } = renewing();
    const first = await live(socket);
    await advance(10_000);
    const second = FakeWebSocket.latest();
    first.serverClose(1006);
    expect(socket.state).toBe('connecting');
    await advance(2_000);
    expect(FakeWebSocket.created).toHaveLength(2); // no third: the successor is the attempt
    second.open();
    second.receive(snapshot);
    expect(states).toEqual(['connecting', 'open', 'connecting', 'open']);
  });

  it('gives up a successor that closes before its snapshot, and tries again', async () => {
    const { socket, advance } = renewing();
    await live(socket);
    await advance(10_000);
    FakeWebSocket.latest().serverClose(1013);
    expect(socket.state).toBe('open');
    await advance(1_000);
    expect(FakeWebSocket.created).toHaveLength(3);
  });

  it('renews from iat, so that a page whose clock is off still renews on time', async () => {
    const { socket, tokens, use, advance } = renewing();
    const skewed = jwt({ sub: 'u', iat: 1_000, exp: 1_020 }); // minted "in 1970" by this clock
    use(({ refresh }) => {
      tokens.push(refresh);
      return skewed;
    });
    await live(socket);
    await advance(9_999);
    expect(tokens).toEqual([false]);
    await advance(1);
    expect(tokens).toEqual([false, true]);
  });
});
