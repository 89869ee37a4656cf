import { afterEach, describe, expect, it, vi } from 'vitest';

import { NotificationCenter } from '../src/center.js';
import { ApiError, NotificationsApi } from '../src/rest.js';
import type { NotificationItem } from '../src/types.js';
import { FakeWebSocket, item } from './fakes.js';

function answer(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

describe('NotificationsApi', () => {
  it('refreshes the token and retries once on 401', async () => {
    const tokens: boolean[] = [];
    const fetch = vi
      .fn<typeof globalThis.fetch>()
      .mockResolvedValueOnce(answer(401, { error: 'unauthorized', detail: 'token expired' }))
      .mockResolvedValueOnce(answer(200, { count: 3 }));
    const api = new NotificationsApi({
      baseUrl: 'https://app.example/',
      getToken: ({ refresh }) => (tokens.push(refresh), refresh ? 'new' : 'old'),
      fetch,
    });
    expect(await api.unreadCount()).toBe(3);
    expect(tokens).toEqual([false, true]);
    expect(fetch.mock.calls[1]?.[0]).toBe('https://app.example/api/v1/notifications/unread-count');
    expect(fetch.mock.calls[1]?.[1]?.headers).toEqual({ Authorization: 'Bearer new' });
  });

  it('gives up after the retry and reports the server error', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () =>
      answer(401, { error: 'unauthorized', detail: 'token expired' }),
    );
    const api = new NotificationsApi({ baseUrl: 'http://x', getToken: () => 't', fetch });
    await expect(api.list()).rejects.toEqual(new ApiError(401, 'unauthorized', 'token expired'));
    expect(fetch).toHaveBeenCalledTimes(2);
  });

  it('reports a refreshed token refused again, and only that', async () => {
    const refused: ApiError[] = [];
    const fetch = vi
      .fn<typeof globalThis.fetch>()
      .mockResolvedValueOnce(answer(401, {}))
      .mockResolvedValueOnce(answer(200, { count: 1 }))
      .mockResolvedValueOnce(answer(403, {}))
      .mockResolvedValueOnce(answer(401, {}))
      .mockResolvedValueOnce(answer(401, { error: 'unauthorized', detail: 'bad signature' }));
    const api = new NotificationsApi({
      baseUrl: 'http://x',
      getToken: () => 't',
      fetch,
      onUnauthorized: (error) => refused.push(error),
    });
    await api.unreadCount();
    await expect(api.markAllRead()).rejects.toBeInstanceOf(ApiError);
    expect(refused).toEqual([]);
    await expect(api.list()).rejects.toBeInstanceOf(ApiError);
    expect(refused).toEqual([new ApiError(401, 'unauthorized', 'bad signature')]);
  });

  it('builds the paths of the guide', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => answer(200, []));
    const api = new NotificationsApi({ baseUrl: 'http://x', getToken: () => 't', fetch });
    await api.list({ skip: 20, limit: 10 });
    await api.markRead('a b');
    await api.markAllRead();
    expect(fetch.mock.calls.map(([url, init]) => `${init?.method} ${url}`)).toEqual([
      'GET http://x/api/v1/notifications/?skip=20&limit=10',
      'PATCH http://x/api/v1/notifications/a%20b/read',
      'POST http://x/api/v1/notifications/read-all',
    ]);
  });
});

/** A fetch that answers each call when the test says so, and records the calls. */
function controlledFetch() {
  type Call = { call: string; answer: (response: Response) => void; fail: (error: Error) => void };
  const calls: Call[] = [];
  const fetch = vi.fn<typeof globalThis.fetch>((url, init) => {
    const call = `${init?.method} ${String(url).replace('http://x/api/v1/notifications', '')}`;
    return new Promise((answer, fail) => calls.push({ call, answer, fail }));
  });
  const next = async (call: string) => {
    await vi.waitFor(() => expect(calls[0]?.call).toBe(call));
    return calls.shift() as Call;
  };
  return { fetch, calls, next };
}

const opened: NotificationCenter[] = [];
afterEach(() => {
  for (const hub of opened.splice(0)) hub.close();
});

describe('NotificationCenter', () => {
  function center(fetch: typeof globalThis.fetch) {
    const hub = new NotificationCenter({
      baseUrl: 'http://x',
      getToken: () => 't',
      fetch,
      socket: { createWebSocket: (url) => new FakeWebSocket(url) },
    });
    const held = item();
    hub.store.apply({ event: 'snapshot', payload: [held, item()] });
    hub.store.apply({ event: 'unread_count.updated', payload: { count: 2 } });
    return { hub, held };
  }

  it('marks read optimistically and keeps it when the server agrees', async () => {
    let resolve: (r: Response) => void = () => undefined;
    const fetch = vi.fn<typeof globalThis.fetch>(() => new Promise((r) => (resolve = r)));
    const { hub, held } = center(fetch);
    const pending = hub.markRead(held.id);
    expect(hub.store.getState().unreadCount).toBe(1);
    expect(hub.store.getState().notificationsById.get(held.id)?.is_read).toBe(true);
    await vi.waitFor(() => expect(fetch).toHaveBeenCalled());
    resolve(answer(200, { ...held, is_read: true }));
    await pending;
    expect(hub.store.getState().unreadCount).toBe(1);
  });

  it('rolls the optimistic read back when the server refuses', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () =>
      answer(404, { error: 'not_found', detail: 'notification not found' }),
    );
    const { hub, held } = center(fetch);
    await expect(hub.markRead(held.id)).rejects.toBeInstanceOf(ApiError);
    expect(hub.store.getState().unreadCount).toBe(2);
    expect(hub.store.getState().notificationsById.get(held.id)?.is_read).toBe(false);
  });

  it('rolls mark-all-read back when the network fails', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => {
      throw new TypeError('network down');
    });
    const { hub } = center(fetch);
    await expect(hub.markAllRead()).rejects.toThrow('network down');
    expect(hub.store.getState().unreadCount).toBe(2);
    expect(hub.store.items().filter((i) => !i.is_read)).toHaveLength(2);
  });

  /** A live centre: the socket is open and holds `unread` with that count. */
  async function liveCenter(fetch: typeof globalThis.fetch, ...unread: NotificationItem[]) {
    FakeWebSocket.created = [];
    const hub = new NotificationCenter({
      baseUrl: 'http://x',
      getToken: () => 't',
      fetch,
      socket: { createWebSocket: (url) => new FakeWebSocket(url) },
    });
    opened.push(hub);
    hub.connect();
    await vi.waitFor(() => expect(FakeWebSocket.created).toHaveLength(1));
    const ws = FakeWebSocket.latest();
    ws.open();
    ws.receive({ event: 'snapshot', payload: unread });
    ws.receive({ event: 'unread_count.updated', payload: { count: unread.length } });
    const badge = () => hub.store.getState().unreadCount;
    const isRead = (held: NotificationItem) =>
      hub.store.getState().notificationsById.get(held.id)?.is_read;
    return { hub, ws, badge, isRead };
  }

  it('a failed read does not bring back a count older than a confirmed one', async () => {
    const { fetch, next, calls } = controlledFetch();
    const [a, b, c] = [item(), item(), item()];
    const { hub, ws, badge, isRead } = await liveCenter(fetch, a, b, c);
    const readingA = hub.markRead(a.id);
    const readingB = hub.markRead(b.id);
    const callA = await next(`PATCH /${a.id}/read`);
    const callB = await next(`PATCH /${b.id}/read`);
    ws.receive({ event: 'notification.read', payload: { id: b.id, is_read: true } });
    ws.receive({ event: 'unread_count.updated', payload: { count: 2 } });
    callB.answer(answer(200, { ...b, is_read: true }));
    callA.answer(answer(500, { error: 'internal', detail: 'boom' }));
    await readingB;
    await expect(readingA).rejects.toBeInstanceOf(ApiError);
    expect(badge()).toBe(2);
    expect([isRead(a), isRead(b), isRead(c)]).toEqual([false, true, false]);
    expect(calls).toEqual([]); // the count that arrived is the truth: nothing to ask
  });

  it('a 504 after the socket confirmed the read keeps it read', async () => {
    const { fetch, next } = controlledFetch();
    const [a, b] = [item(), item()];
    const { hub, ws, badge, isRead } = await liveCenter(fetch, a, b);
    const reading = hub.markRead(a.id);
    const call = await next(`PATCH /${a.id}/read`);
    ws.receive({ event: 'notification.read', payload: { id: a.id, is_read: true } });
    ws.receive({ event: 'unread_count.updated', payload: { count: 1 } });
    call.answer(new Response('Gateway Timeout', { status: 504 }));
    await expect(reading).rejects.toBeInstanceOf(ApiError);
    expect(isRead(a)).toBe(true);
    expect(badge()).toBe(1);
  });

  it('a 504 before any event asks the server for the count instead of guessing', async () => {
    const { fetch, next } = controlledFetch();
    const [a, b] = [item(), item()];
    const { hub, ws, badge, isRead } = await liveCenter(fetch, a, b);
    const reading = hub.markRead(a.id);
    (await next(`PATCH /${a.id}/read`)).answer(new Response('Gateway Timeout', { status: 504 }));
    await expect(reading).rejects.toBeInstanceOf(ApiError);
    expect(isRead(a)).toBe(false);
    (await next('GET /unread-count')).answer(answer(200, { count: 1 }));
    await vi.waitFor(() => expect(badge()).toBe(1));
    ws.receive({ event: 'notification.read', payload: { id: a.id, is_read: true } });
    ws.receive({ event: 'unread_count.updated', payload: { count: 1 } });
    expect(isRead(a)).toBe(true);
    expect(badge()).toBe(1);
  });

  it('a failed mark-all-read shows the count that arrived meanwhile', async () => {
    const { fetch, next, calls } = controlledFetch();
    const [a, b] = [item(), item()];
    const { hub, ws, badge } = await liveCenter(fetch, a, b);
    const reading = hub.markAllRead();
    const call = await next('POST /read-all');
    ws.receive({ event: 'notification.created', payload: item() });
    ws.receive({ event: 'unread_count.updated', payload: { count: 3 } });
    call.fail(new TypeError('network down'));
    await expect(reading).rejects.toThrow('network down');
    expect(badge()).toBe(3);
    expect(hub.store.items().filter((i) => !i.is_read)).toHaveLength(3);
    expect(calls).toEqual([]);
  });

  it('an answer that beats its events asks for the count, and the badge never goes up', async () => {
    const { fetch, next } = controlledFetch();
    const [a, b] = [item(), item()];
    const { hub, ws, badge } = await liveCenter(fetch, a, b);
    const seen: number[] = [];
    hub.store.subscribe(() => seen.push(badge()));
    const reading = hub.markRead(a.id);
    (await next(`PATCH /${a.id}/read`)).answer(answer(200, { ...a, is_read: true }));
    await reading;
    const countCall = await next('GET /unread-count');
    ws.receive({ event: 'notification.read', payload: { id: a.id, is_read: true } });
    ws.receive({ event: 'unread_count.updated', payload: { count: 1 } });
    countCall.answer(answer(200, { count: 1 }));
    await vi.waitFor(() => expect(fetch).toHaveBeenCalledTimes(2));
    expect(seen).toEqual([1]);
  });

  it('goes unauthorized when REST refuses a refreshed token, and retryNow() reconnects', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () =>
      answer(401, { error: 'unauthorized', detail: 'expired' }),
    );
    const [a] = [item()];
    const { hub, ws, isRead } = await liveCenter(fetch, a);
    await expect(hub.markRead(a.id)).rejects.toBeInstanceOf(ApiError);
    expect(isRead(a)).toBe(false);
    expect(hub.store.getState().connection).toBe('unauthorized');
    expect(hub.store.getState().authError?.cause).toEqual(
      new ApiError(401, 'unauthorized', 'expired'),
    );
    expect(ws.closedWith).toBe(1000);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(fetch).toHaveBeenCalledTimes(2); // no count asked for with a refused token
    hub.retryNow();
    await vi.waitFor(() => expect(FakeWebSocket.created).toHaveLength(2));
    expect(hub.store.getState().connection).toBe('connecting');
    expect(hub.store.getState().authError).toBeNull();
  });
});
