import { describe, expect, it, vi } from 'vitest';

import { NotificationCenter } from '../src/center.js';
import { ApiError, NotificationsApi } from '../src/rest.js';
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
});
