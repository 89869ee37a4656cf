import { afterEach, describe, expect, it, vi } from 'vitest';

import { NotificationCenter, type SocketLike } from '../src/center.js';
import { ApiError } from '../src/rest.js';
import type { SocketOptions } from '../src/socket.js';
import type { Counts, NotificationItem, NotificationType } from '../src/types.js';
import { ofTypes, VIEWS } from '../src/views.js';
import { answer, controlledFetch, FakeWebSocket, item, jwt, pageAnswer } from './fakes.js';

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

/** A centre on a socket the test drives directly, holding `snapshot` as its first frames. */
function drivenCenter(
  fetch: typeof globalThis.fetch,
  snapshot: NotificationItem[],
  onNotification?: (item: NotificationItem) => void,
) {
  let socketOptions: SocketOptions | undefined;
  const socket: SocketLike = {
    state: 'idle',
    connect: vi.fn(),
    close: vi.fn(),
    retryNow: vi.fn(),
    markUnauthorized: vi.fn(),
  };
  const hub = new NotificationCenter({
    baseUrl: 'http://x',
    getToken: () => 't',
    fetch,
    pageSize: 2,
    snapshotSize: 2, // the server's: a snapshot of 2 is a full one here
    onNotification,
    createSocket: (options) => {
      socketOptions = options;
      return socket;
    },
  });
  const send = (frame: Parameters<SocketOptions['onEvent']>[0]) => socketOptions?.onEvent(frame);
  send({ event: 'snapshot', payload: snapshot });
  send({ event: 'unread_count.updated', payload: { count: snapshot.length } });
  const ids = () => hub.store.getState().orderedIds;
  return { hub, socket, send, ids, options: () => socketOptions };
}

/** `count` items, newest first, older than everything made before. */
function older(count: number, before: NotificationItem): NotificationItem[] {
  const start = Date.parse(before.created_at);
  return Array.from({ length: count }, (_, index) =>
    item({ created_at: new Date(start - (index + 1) * 60_000).toISOString() }),
  );
}

describe('NotificationCenter socket injection', () => {
  it('builds its socket with createSocket and feeds the store from it', () => {
    const shown = item();
    const { hub, socket, options, ids } = drivenCenter(vi.fn(), [shown]);
    expect(options()).toMatchObject({ baseUrl: 'http://x' });
    hub.connect();
    hub.retryNow();
    hub.close();
    expect(socket.connect).toHaveBeenCalledOnce();
    expect(socket.retryNow).toHaveBeenCalledOnce();
    expect(socket.close).toHaveBeenCalledOnce();
    options()?.onStateChange?.('open', null);
    expect(hub.store.getState().connection).toBe('open');
    expect(ids()).toEqual([shown.id]);
  });

  it('tells the injected socket when REST refuses a refreshed token', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => answer(401, {}));
    const { hub, socket } = drivenCenter(fetch, [item()]);
    await hub.loadMore();
    expect(socket.markUnauthorized).toHaveBeenCalledWith(new ApiError(401, 'http_error', ''));
  });
});

describe('NotificationCenter.loadMore', () => {
  it('pages from the oldest snapshot item, then follows the server cursor', async () => {
    const { fetch, next } = controlledFetch();
    const [newest, oldest] = [item(), item()].reverse() as [NotificationItem, NotificationItem];
    const { hub, ids } = drivenCenter(fetch, [newest, oldest]);
    const [a, b, c] = older(3, oldest);
    const first = hub.loadMore();
    (await next(`GET /?limit=2&before=${oldest.id}`)).answer(pageAnswer([a!, b!], b!.id));
    await first;
    expect(ids()).toEqual([newest.id, oldest.id, a!.id, b!.id]);
    expect(hub.store.getState().hasMore).toBe(true);
    const second = hub.loadMore();
    (await next(`GET /?limit=2&before=${b!.id}`)).answer(pageAnswer([c!]));
    await second;
    expect(ids()).toEqual([newest.id, oldest.id, a!.id, b!.id, c!.id]);
    expect(hub.store.getState().hasMore).toBe(false);
  });

  it('pages through the gap a reconnect leaves below its snapshot, then stops at the old end', async () => {
    const { fetch, next } = controlledFetch();
    const old = [item(), item(), item(), item()].reverse(); // newest first
    const { hub, send, ids } = drivenCenter(fetch, old.slice(0, 2));
    const first = hub.loadMore();
    (await next(`GET /?limit=2&before=${old[1]!.id}`)).answer(pageAnswer(old.slice(2)));
    await first;
    expect(hub.store.getState().hasMore).toBe(false);
    // Offline (or every tab hidden) while four items are created; the new snapshot holds two.
    const fresh = [item(), item(), item(), item()].reverse();
    send({ event: 'snapshot', payload: fresh.slice(0, 2) });
    expect(hub.store.getState().hasMore).toBe(true);
    const gap = hub.loadMore();
    (await next(`GET /?limit=2&before=${fresh[1]!.id}`)).answer(
      pageAnswer(fresh.slice(2), fresh[3]!.id),
    );
    await gap;
    expect(hub.store.getState().hasMore).toBe(true); // the page did not reach held items yet
    const end = hub.loadMore();
    (await next(`GET /?limit=2&before=${fresh[3]!.id}`)).answer(
      pageAnswer(old.slice(0, 2), old[1]!.id),
    );
    await end;
    expect(ids()).toEqual([...fresh, ...old].map((i) => i.id));
    expect(hub.store.getState().hasMore).toBe(false); // the old tail had been read to its end
  });

  it('resumes the old cursor once the gap is filled', async () => {
    const { fetch, next, calls } = controlledFetch();
    const old = [item(), item(), item(), item(), item(), item()].reverse();
    const { hub, send } = drivenCenter(fetch, old.slice(0, 2));
    const first = hub.loadMore();
    (await next(`GET /?limit=2&before=${old[1]!.id}`)).answer(
      pageAnswer(old.slice(2, 4), old[3]!.id),
    );
    await first;
    const fresh = [item(), item(), item()].reverse();
    send({ event: 'snapshot', payload: fresh.slice(0, 2) });
    const gap = hub.loadMore();
    (await next(`GET /?limit=2&before=${fresh[1]!.id}`)).answer(
      pageAnswer([fresh[2]!, old[0]!], old[0]!.id),
    );
    await gap;
    const resumed = hub.loadMore();
    (await next(`GET /?limit=2&before=${old[3]!.id}`)).answer(pageAnswer(old.slice(4)));
    await resumed;
    expect(calls).toHaveLength(0);
    expect(hub.store.items()).toHaveLength(9);
  });

  it('keeps the items of a page asked for before a gap opened, not its cursor', async () => {
    const { fetch, next } = controlledFetch();
    const old = [item(), item(), item(), item()].reverse();
    const { hub, send } = drivenCenter(fetch, old.slice(0, 2));
    const first = hub.loadMore();
    const call = await next(`GET /?limit=2&before=${old[1]!.id}`);
    const fresh = [item(), item(), item()].reverse();
    send({ event: 'snapshot', payload: fresh.slice(0, 2) });
    call.answer(pageAnswer(old.slice(2), old[3]!.id));
    await first;
    expect(hub.store.has(old[3]!.id)).toBe(true);
    const gap = hub.loadMore();
    (await next(`GET /?limit=2&before=${fresh[1]!.id}`)).answer(pageAnswer([fresh[2]!]));
    await gap;
  });

  it('asks for the newest page when no snapshot came yet, and nothing after an empty one', async () => {
    const { fetch, next } = controlledFetch();
    const hub = new NotificationCenter({ baseUrl: 'http://x', getToken: () => 't', fetch });
    expect(hub.store.getState().hasMore).toBe(false); // no "Older" button before anything is known
    const loading = hub.loadMore();
    (await next('GET /?limit=20')).answer(pageAnswer([item()]));
    await loading;
    expect(hub.store.items()).toHaveLength(1);

    const empty = drivenCenter(fetch, []);
    expect(empty.hub.store.getState().hasMore).toBe(false);
    await empty.hub.loadMore();
    expect(fetch).toHaveBeenCalledTimes(1);
  });

  it('gets one token for the socket and its REST calls while it lasts', async () => {
    const iat = Math.floor(Date.now() / 1000);
    const getToken = vi.fn(() => jwt({ sub: 'u', iat, exp: iat + 3600 }));
    const fetch = vi.fn<typeof globalThis.fetch>(async () => answer(200, { count: 0 }));
    FakeWebSocket.created = [];
    const cached = new NotificationCenter({
      baseUrl: 'http://x',
      getToken,
      fetch,
      socket: { createWebSocket: (url) => new FakeWebSocket(url) },
    });
    opened.push(cached);
    cached.connect();
    await vi.waitFor(() => expect(FakeWebSocket.created).toHaveLength(1));
    await cached.markAllRead();
    await cached.refreshUnreadCount();
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(getToken).toHaveBeenCalledWith({ refresh: false });
  });

  it('keeps a live item that arrives while the page is on its way', async () => {
    const { fetch, next } = controlledFetch();
    const held = item();
    const { hub, send, ids } = drivenCenter(fetch, [held]);
    const loading = hub.loadMore();
    const call = await next(`GET /?limit=2&before=${held.id}`);
    expect(hub.store.getState().isLoadingMore).toBe(true);
    const live = item();
    send({ event: 'notification.created', payload: live });
    const [page] = older(1, held);
    call.answer(pageAnswer([page!]));
    await loading;
    expect(ids()).toEqual([live.id, held.id, page!.id]);
    expect(hub.store.getState().isLoadingMore).toBe(false);
  });

  it('holds one copy of an item in both the snapshot and a page, and keeps it read', async () => {
    const { fetch, next } = controlledFetch();
    const [newer, shared] = [item(), item()].reverse() as [NotificationItem, NotificationItem];
    const { hub, send, ids } = drivenCenter(fetch, [newer]);
    const loading = hub.loadMore();
    const call = await next(`GET /?limit=2&before=${newer.id}`);
    // A reconnect's snapshot brings `shared`, read meanwhile; the page has the older copy.
    send({ event: 'snapshot', payload: [newer, { ...shared, is_read: true }] });
    call.answer(pageAnswer([shared]));
    await loading;
    expect(ids()).toEqual([newer.id, shared.id]);
    expect(hub.store.getState().notificationsById.get(shared.id)?.is_read).toBe(true);
  });

  it('shares one request between concurrent calls, and stops after the last page', async () => {
    const { fetch, next, calls } = controlledFetch();
    const held = item();
    const { hub } = drivenCenter(fetch, [held]);
    const loads = [hub.loadMore(), hub.loadMore(), hub.loadMore()];
    (await next(`GET /?limit=2&before=${held.id}`)).answer(pageAnswer([]));
    await Promise.all(loads);
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(hub.store.getState().hasMore).toBe(false);
    await hub.loadMore();
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(calls).toEqual([]);
  });

  it('reports a failed page in loadError without rejecting, and the next call retries', async () => {
    const { fetch, next } = controlledFetch();
    const held = item();
    const { hub } = drivenCenter(fetch, [held]);
    const failing = hub.loadMore();
    (await next(`GET /?limit=2&before=${held.id}`)).fail(new TypeError('network down'));
    await failing;
    expect(hub.store.getState()).toMatchObject({
      isLoadingMore: false,
      hasMore: true,
      loadError: new TypeError('network down'),
    });
    const retrying = hub.loadMore();
    expect(hub.store.getState().loadError).toBeNull();
    (await next(`GET /?limit=2&before=${held.id}`)).answer(pageAnswer([]));
    await retrying;
    expect(hub.store.getState().loadError).toBeNull();
  });
});

describe('NotificationCenter onNotification', () => {
  it('announces each live item once, and no item of a snapshot or a page', async () => {
    const { fetch, next } = controlledFetch();
    const announced: string[] = [];
    const heldWhenAnnounced: boolean[] = [];
    const held = item();
    const { hub, send } = drivenCenter(fetch, [held], (news) => {
      announced.push(news.id);
      heldWhenAnnounced.push(hub.store.has(news.id));
    });
    const loading = hub.loadMore();
    const [paged] = older(1, held);
    (await next(`GET /?limit=2&before=${held.id}`)).answer(pageAnswer([paged!]));
    await loading;
    const live = item();
    const fromSnapshot = item();
    send({ event: 'snapshot', payload: [fromSnapshot, held] });
    send({ event: 'notification.created', payload: held });
    send({ event: 'notification.created', payload: paged! });
    send({ event: 'notification.created', payload: fromSnapshot });
    send({ event: 'notification.created', payload: live });
    send({ event: 'notification.created', payload: live });
    expect(announced).toEqual([live.id]);
    expect(heldWhenAnnounced).toEqual([true]);
  });
});

/** Counts of the inbox with `unread` and `unseen` items of `type`, 0 of the others. */
function genericCounts(unread: number, unseen: number, type: NotificationType = 'GENERIC_INFO') {
  const types = [
    'GENERIC_INFO',
    'TEMPLATE_APPROVED',
    'TEMPLATE_REJECTED',
    'CAMPAIGN_SCHEDULED',
    'CAMPAIGN_SENDING',
    'CAMPAIGN_COMPLETED',
    'CAMPAIGN_ERROR',
  ] as const;
  const by_type = Object.fromEntries(types.map((type) => [type, { unread: 0, unseen: 0 }]));
  by_type[type] = { unread, unseen };
  return { unread, unseen, by_type } as Counts;
}

describe('NotificationCenter, the lifecycle calls', () => {
  /** A driven centre holding `held` (newest first), with its counts as the server sends them. */
  function lifecycleCenter(fetch: typeof globalThis.fetch, held: NotificationItem[]) {
    const driven = drivenCenter(fetch, held);
    const unread = held.filter((shown) => !shown.is_read).length;
    const unseen = held.filter((shown) => !shown.is_seen).length;
    driven.send({ event: 'counts.updated', payload: genericCounts(unread, unseen) });
    const get = (id: string) => driven.hub.store.getState().notificationsById.get(id);
    const counts = () => driven.hub.store.getState().counts;
    const badge = () => driven.hub.store.getState().unreadCount;
    return { ...driven, get, counts, badge };
  }

  it('opens its socket with counts=1, unless told not to', async () => {
    FakeWebSocket.created = [];
    for (const counts of [undefined, false]) {
      const hub = new NotificationCenter({
        baseUrl: 'http://x',
        getToken: () => 't',
        counts,
        socket: { createWebSocket: (url) => new FakeWebSocket(url) },
      });
      opened.push(hub);
      hub.connect();
    }
    await vi.waitFor(() => expect(FakeWebSocket.created).toHaveLength(2));
    expect(FakeWebSocket.created.map((ws) => new URL(ws.url).search)).toEqual([
      '?token=t&counts=1',
      '?token=t',
    ]);
  });

  const calls = [
    ['markUnread', 'PATCH', '/unread', { is_read: true, is_seen: true }, { is_read: false }],
    ['markSeen', 'PATCH', '/seen', {}, { is_seen: true }],
    ['archive', 'PATCH', '/archive', {}, { is_archived: true }],
    ['unarchive', 'PATCH', '/unarchive', { is_archived: true }, { is_archived: false }],
  ] as const;

  for (const [method, verb, suffix, before, after] of calls) {
    it(`${method} shows at once, calls ${verb} …${suffix}, and undoes exactly that on failure`, async () => {
      const { fetch, next } = controlledFetch();
      const target = item(before);
      const { hub, get } = lifecycleCenter(fetch, [target]);
      const changing = hub[method](target.id);
      expect(get(target.id)).toMatchObject(after);
      const call = await next(`${verb} /${target.id}${suffix}`);
      call.answer(answer(500, { error: 'internal', detail: 'boom' }));
      await expect(changing).rejects.toBeInstanceOf(ApiError);
      expect(get(target.id)).toEqual(target);
    });
  }

  it('remove hides the item at once, calls DELETE and keeps it gone once the server agrees', async () => {
    const { fetch, next } = controlledFetch();
    const [a, b] = [item(), item()];
    const { hub, send, ids } = lifecycleCenter(fetch, [b, a]);
    const removing = hub.remove(a.id);
    expect(ids()).toEqual([b.id]);
    expect(hub.store.getState().unreadCount).toBe(1);
    (await next(`DELETE /${a.id}`)).answer(new Response(null, { status: 204 }));
    await removing;
    send({ event: 'notification.deleted', payload: { id: a.id } });
    send({ event: 'unread_count.updated', payload: { count: 1 } });
    send({ event: 'counts.updated', payload: genericCounts(1, 1) });
    send({ event: 'notification.created', payload: a }); // a late duplicate
    expect(ids()).toEqual([b.id]);
  });

  it('a failed delete brings the item back and asks for the counts it cannot know', async () => {
    const { fetch, next } = controlledFetch();
    const a = item();
    const { hub, ids, counts } = lifecycleCenter(fetch, [a]);
    const removing = hub.remove(a.id);
    (await next(`DELETE /${a.id}`)).answer(new Response('Bad Gateway', { status: 502 }));
    await expect(removing).rejects.toBeInstanceOf(ApiError);
    expect(ids()).toEqual([a.id]);
    (await next('GET /counts')).answer(answer(200, genericCounts(0, 0)));
    await vi.waitFor(() => expect(counts()?.unread).toBe(0)); // deleted all the same
    expect(hub.store.getState().unreadCount).toBe(0);
  });

  it('markAllSeen sends up_to the newest held item; one that arrives meanwhile stays unseen', async () => {
    const { fetch, next } = controlledFetch();
    const [a, b] = [item(), item()].reverse() as [NotificationItem, NotificationItem];
    const { hub, send, get, counts } = lifecycleCenter(fetch, [a, b]);
    const seeing = hub.markAllSeen();
    expect([counts()?.unseen, hub.store.getState().unreadCount]).toEqual([0, 2]);
    const call = await next('POST /seen-all');
    const late = item();
    send({ event: 'notification.created', payload: late });
    send({ event: 'unread_count.updated', payload: { count: 3 } });
    send({ event: 'counts.updated', payload: genericCounts(3, 3) });
    expect(counts()?.unseen).toBe(1);
    call.answer(answer(200, { count: 3, changed: 2, done: true }));
    expect(await seeing).toEqual({ count: 3, changed: 2, done: true });
    expect(fetch.mock.calls[0]?.[1]?.body).toBe(JSON.stringify({ up_to: a.id }));
    send({ event: 'notifications.changed', payload: seenAll(a) });
    send({ event: 'counts.updated', payload: genericCounts(3, 1) });
    expect([get(a.id)?.is_seen, get(b.id)?.is_seen, get(late.id)?.is_seen]).toEqual([
      true,
      true,
      false,
    ]);
    expect(counts()?.unseen).toBe(1);
  });

  it('markAllRead of a category sends its types, and a failure restores the server counts', async () => {
    const { fetch, next } = controlledFetch();
    const error = item({ type: 'CAMPAIGN_ERROR' });
    const { hub, counts } = lifecycleCenter(fetch, [error]);
    hub.store.apply({ event: 'counts.updated', payload: genericCounts(1, 1, 'CAMPAIGN_ERROR') });
    const reading = hub.markAllRead({ types: ['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING'] });
    const call = await next('POST /read-all');
    expect(JSON.parse(String(fetch.mock.calls[0]?.[1]?.body))).toEqual({
      types: ['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING'],
      up_to: error.id,
    });
    expect(counts()?.by_type.CAMPAIGN_ERROR.unread).toBe(0);
    call.fail(new TypeError('network down'));
    await expect(reading).rejects.toThrow('network down');
    expect(hub.store.getState().unreadCount).toBe(1);
    expect(counts()?.by_type.CAMPAIGN_ERROR).toEqual({ unread: 1, unseen: 1 });
  });

  it('a 202 is success: the badge follows the counts the server pushes as it goes', async () => {
    const { fetch, next } = controlledFetch();
    const held = [item(), item()].reverse();
    const { hub, send, badge } = lifecycleCenter(fetch, held);
    send({ event: 'unread_count.updated', payload: { count: 500_000 } });
    const archiving = hub.archiveAll();
    expect(badge()).toBe(0);
    (await next('POST /archive-all')).answer(
      answer(202, { count: 400_000, changed: 100_000, done: false }),
    );
    expect((await archiving).done).toBe(false);
    send({ event: 'unread_count.updated', payload: { count: 300_000 } });
    send({ event: 'counts.updated', payload: genericCounts(300_000, 0) });
    expect(badge()).toBe(300_000);
    expect(hub.store.items()).toEqual([]); // the held items are archived: the server said so
  });

  it('deleteAll of the archived view says so in its body', async () => {
    const { fetch, next } = controlledFetch();
    const archived = item({ is_archived: true });
    const { hub, send } = lifecycleCenter(fetch, []);
    send({ event: 'notification.updated', payload: archived });
    const deleting = hub.deleteAll({ archived: true });
    expect(hub.store.items(VIEWS.archived)).toEqual([]);
    (await next('POST /delete-all')).answer(answer(200, { count: 0, changed: 1, done: true }));
    await deleting;
    expect(JSON.parse(String(fetch.mock.calls[0]?.[1]?.body))).toEqual({
      up_to: archived.id,
      archived: true,
    });
  });

  it('asks GET /counts, not the unread count, once the server sent per-type counts', async () => {
    const { fetch, next } = controlledFetch();
    const a = item();
    const { hub, counts } = lifecycleCenter(fetch, [a]);
    const reading = hub.markRead(a.id);
    (await next(`PATCH /${a.id}/read`)).answer(answer(200, { ...a, is_read: true }));
    await reading;
    (await next('GET /counts')).answer(answer(200, genericCounts(0, 0)));
    await vi.waitFor(() => expect(counts()?.unseen).toBe(0));
  });
});

function seenAll(upTo: NotificationItem) {
  return {
    change: { is_seen: true },
    filter: {
      archived: false,
      types: null,
      is_read: null,
      up_to: { id: upTo.id, created_at: upTo.created_at },
    },
  } as const;
}

describe('NotificationCenter views', () => {
  it('pages a view from its newest page with its filter, then follows its cursor', async () => {
    const { fetch, next } = controlledFetch();
    const held = item();
    const { hub } = drivenCenter(fetch, [held]);
    const [a, b, c] = older(3, held).map((shown) => ({ ...shown, is_archived: true }));
    const first = hub.loadMore(VIEWS.archived);
    expect(hub.store.view(VIEWS.archived).isLoadingMore).toBe(true);
    (await next('GET /?limit=2&archived=true')).answer(pageAnswer([a!, b!], b!.id));
    await first;
    const second = hub.loadMore(VIEWS.archived);
    (await next(`GET /?limit=2&before=${b!.id}&archived=true`)).answer(pageAnswer([c!]));
    await second;
    expect(hub.store.items(VIEWS.archived).map((shown) => shown.id)).toEqual(
      [a!, b!, c!].map((shown) => shown.id),
    );
    expect(hub.store.view(VIEWS.archived).hasMore).toBe(false);
    await hub.loadMore(VIEWS.archived);
    expect(fetch).toHaveBeenCalledTimes(2);
    expect(hub.store.items()).toEqual([held]); // the inbox is the inbox
  });

  it('asks for a category with one type= per type, and the unread view with is_read', async () => {
    const { fetch, next } = controlledFetch();
    const { hub } = drivenCenter(fetch, [item()]);
    const campaigns = ofTypes(['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING']);
    const loading = [hub.loadMore(campaigns), hub.loadMore(VIEWS.unread)];
    (await next('GET /?limit=2&type=CAMPAIGN_ERROR&type=CAMPAIGN_SENDING')).answer(pageAnswer([]));
    (await next('GET /?limit=2&is_read=false')).answer(pageAnswer([]));
    await Promise.all(loading);
    expect(hub.store.view(campaigns).hasMore).toBe(false);
  });

  it('shares one request between calls for one view, and reports its failure in the view', async () => {
    const { fetch, next } = controlledFetch();
    const { hub } = drivenCenter(fetch, [item()]);
    const loads = [hub.loadMore(VIEWS.unseen), hub.loadMore({ isSeen: false })];
    (await next('GET /?limit=2&is_seen=false')).fail(new TypeError('network down'));
    await Promise.all(loads);
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(hub.store.view(VIEWS.unseen)).toMatchObject({
      isLoadingMore: false,
      hasMore: true,
      loadError: new TypeError('network down'),
    });
    expect(hub.store.getState().loadError).toBeNull();
  });

  it("starts the inbox's pages below its own items, not below the older ones of another view", async () => {
    const { fetch, next } = controlledFetch();
    const held = item();
    const { hub } = drivenCenter(fetch, [held]);
    const [old] = older(1, held);
    const loading = hub.loadMore(VIEWS.unread);
    (await next('GET /?limit=2&is_read=false')).answer(pageAnswer([old!], old!.id));
    await loading;
    const inbox = hub.loadMore();
    (await next(`GET /?limit=2&before=${held.id}`)).answer(pageAnswer([]));
    await inbox;
  });
});
