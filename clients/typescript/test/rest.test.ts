import { describe, expect, it, vi } from 'vitest';

import { ApiError, nextCursor, NotificationsApi } from '../src/rest.js';
import { SignedOutError } from '../src/token.js';
import { answer, item, pageAnswer } from './fakes.js';

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
    const refused: (ApiError | SignedOutError)[] = [];
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

  it('sends the calls that change something with keepalive, so that a navigation cannot cancel them', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => answer(200, { count: 0 }));
    const api = new NotificationsApi({ baseUrl: 'http://x', getToken: () => 't', fetch });
    await api.markRead(item().id);
    await api.markAllRead();
    await api.unreadCount();
    expect(fetch.mock.calls.map(([, init]) => [init?.method, init?.keepalive])).toEqual([
      ['PATCH', true],
      ['POST', true],
      ['GET', false],
    ]);
  });

  it('sends the call in the same task when the token is at hand (a click that follows a link)', async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => answer(200, item()));
    const api = new NotificationsApi({ baseUrl: 'http://x', getToken: async () => 't', fetch });
    void api.markRead(item().id);
    await Promise.resolve().then().then().then(); // microtasks only: no timer, no network
    expect(fetch).toHaveBeenCalledTimes(1);
  });

  it('rejects with SignedOutError, and reports it, when getToken says signed out', async () => {
    const refused: unknown[] = [];
    const fetch = vi.fn<typeof globalThis.fetch>();
    const api = new NotificationsApi({
      baseUrl: 'http://x',
      getToken: () => null,
      fetch,
      onUnauthorized: (error) => refused.push(error),
    });
    await expect(api.markAllRead()).rejects.toBeInstanceOf(SignedOutError);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toBeInstanceOf(SignedOutError);
    expect(fetch).not.toHaveBeenCalled();
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

describe('NotificationsApi.page', () => {
  function api(response: () => Response) {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => response());
    return {
      api: new NotificationsApi({ baseUrl: 'http://x/', getToken: () => 't', fetch }),
      fetch,
    };
  }
  const urls = (fetch: ReturnType<typeof api>['fetch']) =>
    fetch.mock.calls.map(([url]) => String(url).replace('http://x/api/v1/notifications', ''));

  it('asks for the newest 20 by default', async () => {
    const { api: notifications, fetch } = api(() => pageAnswer([]));
    await notifications.page();
    expect(urls(fetch)).toEqual(['/?limit=20']);
  });

  it('puts the cursor and the filters in the query, encoded', async () => {
    const { api: notifications, fetch } = api(() => pageAnswer([]));
    await notifications.page({ before: 'a&b', limit: 5, isRead: false, type: 'CAMPAIGN_ERROR' });
    await notifications.page({ isRead: true });
    expect(urls(fetch)).toEqual([
      '/?limit=5&before=a%26b&is_read=false&type=CAMPAIGN_ERROR',
      '/?limit=20&is_read=true',
    ]);
  });

  it('returns the items and the cursor of the Link header', async () => {
    const items = [item(), item()];
    const { api: notifications } = api(() => pageAnswer(items, items[1]!.id));
    expect(await notifications.page()).toEqual({ items, next: items[1]!.id });
  });

  it('returns no cursor on the last page', async () => {
    const { api: notifications } = api(() => pageAnswer([item()]));
    expect((await notifications.page()).next).toBeNull();
  });

  it('rejects an unknown cursor with the server error', async () => {
    const { api: notifications } = api(() =>
      answer(404, { error: 'not_found', detail: 'notification not found' }),
    );
    await expect(notifications.page({ before: 'gone' })).rejects.toEqual(
      new ApiError(404, 'not_found', 'notification not found'),
    );
  });
});

describe('nextCursor', () => {
  it('reads the before parameter of the rel="next" link', () => {
    expect(
      nextCursor('</api/v1/notifications/?limit=20&is_read=false&before=abc-1>; rel="next"'),
    ).toBe('abc-1');
  });

  it('accepts absolute targets, unquoted and multiple relation types, any case', () => {
    expect(nextCursor('<https://h.example/api/v1/notifications/?before=x>; rel=next')).toBe('x');
    expect(nextCursor('</p?before=y>; title="a; b, c"; REL="Next last"')).toBe('y');
  });

  it('picks the next link among several', () => {
    expect(nextCursor('</p?before=1>; rel="prev", </p?before=2>;rel="next"')).toBe('2');
  });

  it('decodes the cursor', () => {
    expect(nextCursor('</p?limit=2&before=a%26b>; rel="next"')).toBe('a&b');
  });

  it('is null without a header, without a next link, or without a cursor', () => {
    expect(nextCursor(null)).toBeNull();
    expect(nextCursor('')).toBeNull();
    expect(nextCursor('</p?before=1>; rel="prev"')).toBeNull();
    expect(nextCursor('</p?before=1>; rel="nextpage"')).toBeNull();
    expect(nextCursor('</p?limit=2>; rel="next"')).toBeNull();
  });
});

describe('NotificationsApi, the lifecycle calls', () => {
  function recording(response: () => Response = () => answer(200, item())) {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => response());
    const api = new NotificationsApi({ baseUrl: 'http://x', getToken: () => 't', fetch });
    const sent = () =>
      fetch.mock.calls.map(([url, init]) => {
        const path = String(url).replace('http://x/api/v1/notifications', '');
        const body = init?.body === undefined ? '' : ` ${String(init.body)}`;
        return `${init?.method} ${path}${body}`;
      });
    return { api, fetch, sent };
  }

  it('builds the per-item paths, encoded, and answers the item', async () => {
    const changed = item({ is_archived: true });
    const { api, sent } = recording(() => answer(200, changed));
    expect(await api.markUnread('a b')).toEqual(changed);
    await api.markSeen('a');
    await api.archive('a');
    await api.unarchive('a');
    expect(sent()).toEqual([
      'PATCH /a%20b/unread',
      'PATCH /a/seen',
      'PATCH /a/archive',
      'PATCH /a/unarchive',
    ]);
  });

  it('deletes with DELETE and takes the 204 without a body', async () => {
    const { api, sent } = recording(() => new Response(null, { status: 204 }));
    await expect(api.remove('a')).resolves.toBeUndefined();
    expect(sent()).toEqual(['DELETE /a']);
  });

  it('rejects a delete of an unknown item with the server error', async () => {
    const { api } = recording(() => answer(404, { error: 'not_found', detail: 'gone' }));
    await expect(api.remove('a')).rejects.toEqual(new ApiError(404, 'not_found', 'gone'));
  });

  it('sends the bulk calls without a body when no option is set, as the guide does', async () => {
    const { api, sent, fetch } = recording(() => answer(200, { count: 0, changed: 2, done: true }));
    expect(await api.markAllRead()).toEqual({ count: 0, changed: 2, done: true });
    await api.markAllSeen();
    await api.archiveAll();
    await api.unarchiveAll();
    await api.deleteAll();
    expect(sent()).toEqual([
      'POST /read-all',
      'POST /seen-all',
      'POST /archive-all',
      'POST /unarchive-all',
      'POST /delete-all',
    ]);
    expect(fetch.mock.calls[0]?.[1]?.headers).toEqual({ Authorization: 'Bearer t' });
  });

  it('sends the bulk options as the JSON body, in the wire names', async () => {
    const { api, sent, fetch } = recording(() => answer(200, { count: 1, changed: 1, done: true }));
    await api.markAllRead({ types: ['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING'], upTo: 'id-9' });
    await api.archiveAll({ isRead: true });
    await api.deleteAll({ archived: true, upTo: 'id-3' });
    expect(sent()).toEqual([
      'POST /read-all {"types":["CAMPAIGN_ERROR","CAMPAIGN_SENDING"],"up_to":"id-9"}',
      'POST /archive-all {"is_read":true}',
      'POST /delete-all {"up_to":"id-3","archived":true}',
    ]);
    expect(fetch.mock.calls.map(([, init]) => [init?.keepalive, init?.headers])).toEqual(
      Array(3).fill([true, { Authorization: 'Bearer t', 'Content-Type': 'application/json' }]),
    );
  });

  it('takes a 202 as success: the server carries on and pushes the rest', async () => {
    const { api } = recording(() => answer(202, { count: 120_000, changed: 5_000, done: false }));
    expect(await api.archiveAll()).toEqual({ count: 120_000, changed: 5_000, done: false });
  });

  it('reads the counts', async () => {
    const counts = { unread: 1, unseen: 0, by_type: {} };
    const { api, sent } = recording(() => answer(200, counts));
    expect(await api.getCounts()).toEqual(counts);
    expect(sent()).toEqual(['GET /counts']);
  });

  it('refreshes the token and retries once on 401, body and all', async () => {
    const tokens: boolean[] = [];
    const fetch = vi
      .fn<typeof globalThis.fetch>()
      .mockResolvedValueOnce(answer(401, { error: 'unauthorized', detail: 'token expired' }))
      .mockResolvedValueOnce(new Response(null, { status: 204 }))
      .mockResolvedValueOnce(answer(401, {}))
      .mockResolvedValueOnce(answer(200, { count: 0, changed: 1, done: true }));
    const api = new NotificationsApi({
      baseUrl: 'http://x',
      getToken: ({ refresh }) => (tokens.push(refresh), refresh ? 'new' : 'old'),
      fetch,
    });
    await api.remove('a');
    await api.markAllSeen({ upTo: 'b' });
    expect(tokens).toEqual([false, true, false, true]);
    expect(fetch.mock.calls[3]?.[1]).toMatchObject({
      method: 'POST',
      body: '{"up_to":"b"}',
      headers: { Authorization: 'Bearer new' },
    });
  });

  it('puts the views of a page in the query: archived, unseen, several types', async () => {
    const { api, sent } = recording(() => pageAnswer([]));
    await api.page({
      archived: true,
      isSeen: false,
      types: ['TEMPLATE_APPROVED', 'TEMPLATE_REJECTED'],
    });
    await api.page({ type: 'CAMPAIGN_ERROR', types: ['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING'] });
    expect(sent()).toEqual([
      'GET /?limit=20&is_seen=false&archived=true&type=TEMPLATE_APPROVED&type=TEMPLATE_REJECTED',
      'GET /?limit=20&type=CAMPAIGN_ERROR&type=CAMPAIGN_SENDING',
    ]);
  });
});
