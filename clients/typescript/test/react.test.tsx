// @vitest-environment happy-dom
import { act, StrictMode, useState, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { renderToString } from 'react-dom/server';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { NOTIFICATION_TYPES } from '../src/protocol.js';
import {
  NotificationsProvider,
  useCounts,
  useNotifications,
  useNotificationView,
  useUnreadCount,
  type NotificationsProviderProps,
  type UseNotifications,
  type UseNotificationView,
} from '../src/react.js';
import type { Counts, NotificationItem, NotificationType } from '../src/types.js';
import { ofTypes } from '../src/views.js';
import { answer, controlledFetch, FakeWebSocket, item, pageAnswer } from './fakes.js';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

let latest: UseNotifications | undefined;
let rerender: () => void = () => undefined;
let tokenCalls = 0;
let signedOut = false;
let fetch: typeof globalThis.fetch;
let announced: string[];

/** The app: a provider whose getToken and onNotification are new functions on every render. */
function App({
  userKey = 'user-1',
  shared = false,
  children,
}: {
  userKey?: string;
  /** The tabs of the browser share one socket; off here, so that each test is one tab. */
  shared?: boolean;
  children: ReactNode;
}) {
  const [renders, setRenders] = useState(0);
  rerender = () => setRenders((n) => n + 1);
  const getToken: NotificationsProviderProps['getToken'] = () => {
    if (signedOut) return null;
    return `token-${renders}-${++tokenCalls}`;
  };
  return (
    <NotificationsProvider
      baseUrl="http://x"
      userKey={userKey}
      shareAcrossTabs={shared}
      getToken={getToken}
      onNotification={(news) => announced.push(`${renders}:${news.id}`)}
      fetch={(input, init) => fetch(input, init)}
      socket={{ createWebSocket: (url) => new FakeWebSocket(url) }}
    >
      {children}
    </NotificationsProvider>
  );
}

function Bell() {
  latest = useNotifications();
  return <span>{latest.unreadCount}</span>;
}

let badgeRenders = 0;
function Badge() {
  const count = useUnreadCount();
  badgeRenders += 1;
  return <b>{count}</b>;
}

const settle = () => act(async () => await new Promise((r) => setTimeout(r, 0)));

/** The socket of the live centre, past its opening frames. */
function opened(...snapshot: NotificationItem[]): FakeWebSocket {
  return openedOn(FakeWebSocket.latest(), ...snapshot);
}

/** `ws` opens and sends its opening: `snapshot` and its count. */
function openedOn(ws: FakeWebSocket, ...snapshot: NotificationItem[]): FakeWebSocket {
  act(() => {
    ws.open();
    ws.receive({ event: 'snapshot', payload: snapshot });
    ws.receive({ event: 'unread_count.updated', payload: { count: snapshot.length } });
  });
  return ws;
}

let container: HTMLElement;
let root: ReturnType<typeof createRoot>;

beforeEach(() => {
  FakeWebSocket.created = [];
  tokenCalls = 0;
  signedOut = false;
  badgeRenders = 0;
  announced = [];
  fetch = async () => answer(200, {});
  container = document.createElement('div');
  root = createRoot(container);
});
afterEach(() => act(() => root.unmount()));

describe('NotificationsProvider and useNotifications', () => {
  it('renders the live list and badge, and survives re-renders without reconnecting', async () => {
    act(() =>
      root.render(
        <App>
          <Bell />
        </App>,
      ),
    );
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    const first = item();
    const ws = opened(first);
    expect(latest?.items).toEqual([first]);
    expect(latest?.connection).toBe('open');
    expect(container.textContent).toBe('1');

    act(() => rerender());
    act(() => rerender());
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);

    const second = item();
    act(() => ws.receive({ event: 'notification.created', payload: second }));
    expect(latest?.items.map((i) => i.id)).toEqual([second.id, first.id]);
  });

  it('shares one centre, one socket and one store between every hook below it', async () => {
    const seen: UseNotifications[] = [];
    function Other() {
      seen.push(useNotifications());
      return null;
    }
    act(() =>
      root.render(
        <App>
          <Bell />
          <Other />
          <Badge />
        </App>,
      ),
    );
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    const held = item();
    opened(held);
    await act(async () => await latest?.markRead(held.id));
    expect(seen.at(-1)?.items).toEqual([{ ...held, is_read: true, is_seen: true }]);
    expect(container.textContent).toBe('00');
  });

  it('re-renders useUnreadCount only when the count changes', async () => {
    act(() =>
      root.render(
        <App>
          <Badge />
        </App>,
      ),
    );
    await settle();
    const ws = opened(item());
    const rendersAtOne = badgeRenders;
    act(() => {
      ws.receive({ event: 'notification.created', payload: item() });
      ws.receive({ event: 'keepalive', payload: {} });
      ws.receive({ event: 'unread_count.updated', payload: { count: 1 } });
    });
    expect(badgeRenders).toBe(rendersAtOne);
    act(() => ws.receive({ event: 'unread_count.updated', payload: { count: 2 } }));
    expect(badgeRenders).toBe(rendersAtOne + 1);
    expect(container.textContent).toBe('2');
  });

  it('uses the newest getToken for the next connection', async () => {
    act(() =>
      root.render(
        <App>
          <Bell />
        </App>,
      ),
    );
    await settle();
    act(() => rerender());
    await settle();
    act(() => FakeWebSocket.latest().serverClose(4401));
    await act(async () => await new Promise((r) => setTimeout(r, 1300)));
    expect(FakeWebSocket.created).toHaveLength(2);
    expect(FakeWebSocket.latest().token).toMatch(/^token-1-/);
  });

  it('opens one socket under StrictMode and closes it on unmount', async () => {
    act(() =>
      root.render(
        <StrictMode>
          <App>
            <Bell />
            <Badge />
          </App>
        </StrictMode>,
      ),
    );
    await settle();
    const open = FakeWebSocket.created.filter((ws) => ws.closedWith === undefined);
    expect(open).toHaveLength(1);
    const held = item();
    act(() => {
      open[0]?.receive({ event: 'snapshot', payload: [held] });
      open[0]?.receive({ event: 'unread_count.updated', payload: { count: 1 } });
    });
    expect(latest?.items).toEqual([held]);
    act(() => root.unmount());
    expect(open[0]?.closedWith).toBe(1000);
    expect(FakeWebSocket.created.every((ws) => ws.closedWith === 1000)).toBe(true);
    root = createRoot(container);
  });

  it('marks read through the store at once', async () => {
    act(() =>
      root.render(
        <App>
          <Bell />
        </App>,
      ),
    );
    await settle();
    const held = item();
    opened(held);
    await act(async () => await latest?.markRead(held.id));
    expect(latest?.unreadCount).toBe(0);
    expect(latest?.items[0]?.is_read).toBe(true);
  });

  it('tells signed out from offline, and retryNow() reconnects', async () => {
    signedOut = true;
    act(() =>
      root.render(
        <App>
          <Bell />
        </App>,
      ),
    );
    await settle();
    expect(latest?.connection).toBe('unauthorized');
    expect(latest?.authError?.reason).toBe('signed_out');
    expect(FakeWebSocket.created).toHaveLength(0);
    signedOut = false;
    act(() => latest?.retryNow());
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(latest?.connection).toBe('connecting');
    expect(latest?.authError).toBeNull();
  });

  it('loads older pages into the live list', async () => {
    const control = controlledFetch();
    fetch = control.fetch;
    act(() =>
      root.render(
        <App>
          <Bell />
        </App>,
      ),
    );
    await settle();
    const held = item({ created_at: '2026-11-28T08:00:00Z' });
    const ws = opened(held);
    const paged = item({ created_at: '2026-11-28T06:00:00Z' });
    let loading: Promise<void> | undefined;
    act(() => void (loading = latest?.loadMore()));
    expect(latest?.isLoadingMore).toBe(true);
    const call = await control.next(`GET /?limit=20&before=${held.id}`);
    const live = item({ created_at: '2026-11-28T09:00:00Z' });
    act(() => ws.receive({ event: 'notification.created', payload: live }));
    await act(async () => {
      call.answer(pageAnswer([paged]));
      await loading;
    });
    expect(latest?.items.map((i) => i.id)).toEqual([live.id, held.id, paged.id]);
    expect(latest).toMatchObject({ hasMore: false, isLoadingMore: false, loadError: null });
  });

  it('announces live items through the latest onNotification, without reconnecting', async () => {
    act(() =>
      root.render(
        <App>
          <Bell />
        </App>,
      ),
    );
    await settle();
    const held = item();
    const ws = opened(held);
    act(() => rerender());
    const news = item();
    act(() => {
      ws.receive({ event: 'notification.created', payload: held });
      ws.receive({ event: 'notification.created', payload: news });
      ws.receive({ event: 'notification.created', payload: news });
    });
    expect(announced).toEqual([`1:${news.id}`]);
    expect(FakeWebSocket.created).toHaveLength(1);
  });

  it('drops the previous user entirely when userKey changes', async () => {
    const shown: string[][] = [];
    function Recorder() {
      shown.push(useNotifications().items.map((i) => i.id));
      return null;
    }
    const render = (userKey: string) =>
      act(() =>
        root.render(
          <App userKey={userKey}>
            <Bell />
            <Recorder />
          </App>,
        ),
      );
    render('user-1');
    await settle();
    const before = item();
    const oldSocket = opened(before);
    act(() => oldSocket.receive({ event: 'unread_count.updated', payload: { count: 5 } }));
    const rendersBefore = shown.length;

    render('user-2');
    await settle();
    expect(oldSocket.closedWith).toBe(1000);
    expect(FakeWebSocket.created).toHaveLength(2);
    const after = item();
    opened(after);
    expect(latest?.items).toEqual([after]);
    expect(latest?.unreadCount).toBe(1);
    // Not one render after the switch, not even the one that started it, saw user-1's item.
    expect(shown.slice(rendersBefore).flat()).not.toContain(before.id);
    // A late frame on the old socket reaches nothing.
    act(() => oldSocket.receive({ event: 'notification.created', payload: item() }));
    expect(latest?.items).toEqual([after]);
  });

  it('renders the empty state on the server without touching browser APIs', () => {
    const WebSocket = vi.fn(() => {
      throw new Error('WebSocket used during a server render');
    });
    vi.stubGlobal('WebSocket', WebSocket);
    vi.stubGlobal('BroadcastChannel', WebSocket);
    try {
      function Page() {
        const { items, connection, hasMore } = useNotifications();
        return (
          <p>
            {useUnreadCount()}|{items.length}|{connection}|{String(hasMore)}
          </p>
        );
      }
      const html = renderToString(
        <NotificationsProvider baseUrl="http://x" getToken={() => 't'}>
          <Page />
        </NotificationsProvider>,
      );
      expect(html).toBe('<p>0<!-- -->|<!-- -->0<!-- -->|<!-- -->idle<!-- -->|<!-- -->false</p>');
      expect(WebSocket).not.toHaveBeenCalled();
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('throws a clear error when a hook is used outside a provider', () => {
    expect(() => renderToString(<Bell />)).toThrow(/useNotifications.*<NotificationsProvider>/);
    expect(() => renderToString(<Badge />)).toThrow(/useUnreadCount.*<NotificationsProvider>/);
  });
});

describe('NotificationsProvider across tabs', () => {
  it('gives two tabs of one user one socket, and both hear its frames', async () => {
    // Two providers in one document stand for two tabs; Node's BroadcastChannel joins them.
    const views: UseNotifications[][] = [[], []];
    function Tab({ index }: { index: number }) {
      views[index]?.push(useNotifications());
      return null;
    }
    const second = createRoot(document.createElement('div'));
    act(() => {
      root.render(
        <App shared>
          <Tab index={0} />
        </App>,
      );
      second.render(
        <App shared>
          <Tab index={1} />
        </App>,
      );
    });
    for (let waited = 0; FakeWebSocket.created.length === 0 && waited < 3000; waited += 50) {
      await act(async () => await new Promise((r) => setTimeout(r, 50)));
    }
    // A loaded machine can delay a claim past its window: two leaders then meet at their
    // next beats and one lets its socket go. What holds is one socket left open.
    const live = () => FakeWebSocket.created.filter((ws) => ws.readyState !== 3);
    await act(async () => await new Promise((r) => setTimeout(r, 600)));
    for (let waited = 0; live().length !== 1 && waited < 3000; waited += 50) {
      await act(async () => await new Promise((r) => setTimeout(r, 50)));
    }
    expect(live()).toHaveLength(1);
    const news = item();
    openedOn(live()[0] as FakeWebSocket, news);
    for (let waited = 0; waited < 2000; waited += 50) {
      if (views.every((seen) => seen.at(-1)?.items.length === 1)) break;
      await act(async () => await new Promise((r) => setTimeout(r, 50)));
    }
    expect(views.map((seen) => seen.at(-1)?.items.map((i) => i.id))).toEqual([
      [news.id],
      [news.id],
    ]);
    expect(views.map((seen) => seen.at(-1)?.unreadCount)).toEqual([1, 1]);
    act(() => second.unmount());
  });
});

/** Counts with `[unread, unseen]` per type given, 0 for the others. */
function countsOf(given: Partial<Record<NotificationType, [number, number]>>): Counts {
  const by_type = Object.fromEntries(
    NOTIFICATION_TYPES.map((type) => {
      const [unread, unseen] = given[type] ?? [0, 0];
      return [type, { unread, unseen }];
    }),
  ) as Counts['by_type'];
  const values = Object.values(by_type);
  return {
    unread: values.reduce((sum, own) => sum + own.unread, 0),
    unseen: values.reduce((sum, own) => sum + own.unseen, 0),
    by_type,
  };
}

describe('useCounts and useNotificationView', () => {
  it('useCounts is null until the server sends counts, then re-renders only when they change', async () => {
    const seen: (Counts | null)[] = [];
    function CountsProbe() {
      seen.push(useCounts());
      return null;
    }
    act(() =>
      root.render(
        <App>
          <CountsProbe />
        </App>,
      ),
    );
    await settle();
    const ws = opened(item());
    expect(seen.at(-1)).toBeNull();
    expect(new URL(ws.url).searchParams.get('counts')).toBe('1');
    act(() => ws.receive({ event: 'counts.updated', payload: countsOf({ GENERIC_INFO: [1, 1] }) }));
    const renders = seen.length;
    act(() => {
      ws.receive({ event: 'keepalive', payload: {} });
      ws.receive({ event: 'counts.updated', payload: countsOf({ GENERIC_INFO: [1, 1] }) });
    });
    expect(seen).toHaveLength(renders);
    act(() => ws.receive({ event: 'counts.updated', payload: countsOf({ GENERIC_INFO: [1, 0] }) }));
    expect(seen.at(-1)).toMatchObject({ unread: 1, unseen: 0 });
    expect(seen).toHaveLength(renders + 1);
  });

  it('a view shows its part of the one store and pages on its own', async () => {
    const control = controlledFetch();
    fetch = control.fetch;
    let view: UseNotificationView | undefined;
    function Campaigns() {
      // A new filter object on every render: the same view.
      view = useNotificationView(ofTypes(['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING']));
      return null;
    }
    act(() =>
      root.render(
        <App>
          <Bell />
          <Campaigns />
        </App>,
      ),
    );
    await settle();
    const error = item({ type: 'CAMPAIGN_ERROR' });
    const info = item();
    const ws = opened(info, error);
    expect(view?.items).toEqual([error]);
    expect(view?.hasMore).toBe(true);
    let loading: Promise<void> | undefined;
    act(() => void (loading = view?.loadMore()));
    expect(view?.isLoadingMore).toBe(true);
    const older = item({ type: 'CAMPAIGN_SENDING', created_at: '2020-01-01T00:00:00Z' });
    await act(async () => {
      (await control.next('GET /?limit=20&type=CAMPAIGN_ERROR&type=CAMPAIGN_SENDING')).answer(
        pageAnswer([error, older]),
      );
      await loading;
    });
    expect(view?.items.map((shown) => shown.id)).toEqual([error.id, older.id]);
    expect(view?.hasMore).toBe(false);
    act(() =>
      ws.receive({ event: 'notification.updated', payload: { ...error, is_archived: true } }),
    );
    expect(view?.items.map((shown) => shown.id)).toEqual([older.id]);
    expect(latest?.items.map((shown) => shown.id)).toEqual([info.id]);
  });

  it("a view's bulk calls carry its types", async () => {
    const control = controlledFetch();
    fetch = control.fetch;
    let view: UseNotificationView | undefined;
    function Templates() {
      view = useNotificationView({ types: ['TEMPLATE_REJECTED'] });
      return null;
    }
    act(() =>
      root.render(
        <App>
          <Templates />
        </App>,
      ),
    );
    await settle();
    const rejected = item({ type: 'TEMPLATE_REJECTED' });
    opened(rejected);
    let reading: Promise<void> | undefined;
    act(() => void (reading = view?.markAllRead()));
    expect(view?.items[0]?.is_read).toBe(true);
    const call = await control.next('POST /read-all');
    expect(JSON.parse(String(control.fetch.mock.calls[0]?.[1]?.body))).toEqual({
      types: ['TEMPLATE_REJECTED'],
      up_to: rejected.id,
    });
    await act(async () => {
      call.answer(answer(200, { count: 0, changed: 1, done: true }));
      await reading;
    });
  });

  it('archives, unreads and removes through the store at once', async () => {
    act(() =>
      root.render(
        <App>
          <Bell />
        </App>,
      ),
    );
    await settle();
    const [a, b, c] = [item(), item({ is_read: true, is_seen: true }), item()];
    const ws = opened(c, b, a);
    act(() => ws.receive({ event: 'unread_count.updated', payload: { count: 2 } }));
    await act(async () => {
      await Promise.all([latest?.archive(a.id), latest?.markUnread(b.id), latest?.remove(c.id)]);
    });
    expect(latest?.items).toEqual([{ ...b, is_read: false }]);
    expect(latest?.unreadCount).toBe(1);
  });

  it('throws a clear error when the new hooks are used outside a provider', () => {
    function CountsProbe() {
      useCounts();
      return null;
    }
    function ViewProbe() {
      useNotificationView();
      return null;
    }
    expect(() => renderToString(<CountsProbe />)).toThrow(/useCounts.*<NotificationsProvider>/);
    expect(() => renderToString(<ViewProbe />)).toThrow(
      /useNotificationView.*<NotificationsProvider>/,
    );
  });
});
