'use client';

import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';

import { NotificationCenter, type NotificationCenterOptions } from './center.js';
import { SharedSocket } from './shared.js';
import type { UnauthorizedError } from './socket.js';
import type { BulkOptions, BulkResult } from './rest.js';
import { EMPTY_STATE, EMPTY_VIEW, type NotificationState, type ViewState } from './store.js';
import type { ConnectionState, Counts, NotificationItem } from './types.js';
import { viewKey, VIEWS, type ViewFilter } from './views.js';

export interface NotificationsProviderProps extends NotificationCenterOptions {
  /**
   * Who is signed in. A new value (or a new `baseUrl`) closes the centre of the previous user
   * and starts an empty one: nothing of that user shows after the switch. Changes to the other
   * options apply from the next centre on; `getToken` and `onNotification` are always the
   * latest ones.
   */
  userKey?: string;
  /**
   * With a `userKey`, the tabs of a browser share one socket (`SharedSocket`: one tab holds
   * it and passes events on; another takes over when it closes; it is let go while every
   * tab is hidden). `false`: a socket per tab. Without a `userKey`, always a socket per tab.
   */
  shareAcrossTabs?: boolean;
  children?: ReactNode;
}

export interface UseNotifications {
  /** The inbox, newest first (`useNotificationView` for the other views). */
  items: readonly NotificationItem[];
  unreadCount: number;
  /** The inbox's counts, per type too; `null` until the server sent them. */
  counts: Counts | null;
  connection: ConnectionState;
  /** Why `connection` is `unauthorized` (signed out, not offline); `null` otherwise. */
  authError: UnauthorizedError | null;
  /** Older items may exist on the server. */
  hasMore: boolean;
  isLoadingMore: boolean;
  /** Why the last `loadMore()` failed; `null` otherwise. */
  loadError: unknown | null;
  /** Fetch the next page of older items; never rejects (see `loadError`). */
  loadMore: () => Promise<void>;
  /** Each change shows at once and is undone if the server refuses (the promise rejects). */
  markRead: (id: string) => Promise<void>;
  markUnread: (id: string) => Promise<void>;
  markSeen: (id: string) => Promise<void>;
  archive: (id: string) => Promise<void>;
  unarchive: (id: string) => Promise<void>;
  /** Deleted for good. */
  remove: (id: string) => Promise<void>;
  /** Every inbox item read (up to the newest held: one arriving meanwhile stays unread). */
  markAllRead: () => Promise<void>;
  /** Every inbox item seen, as when the bell opens: the unseen count drops to 0. */
  markAllSeen: () => Promise<void>;
  /** Reconnect at once, e.g. after the user signed in again. */
  retryNow: () => void;
}

/** One view of the feed (`VIEWS.archived`, `ofTypes([...])`…), live, and its bulk calls. */
export interface UseNotificationView extends ViewState {
  /** Fetch the view's next page; never rejects (see `loadError`). */
  loadMore: () => Promise<void>;
  /**
   * The bulk calls, for the view's types (and `isRead`), up to its newest held item.
   * Read-all, seen-all and archive-all act on the inbox, unarchive-all on the archived view,
   * delete-all on the view's own half.
   */
  markAllRead: () => Promise<void>;
  markAllSeen: () => Promise<void>;
  archiveAll: () => Promise<void>;
  unarchiveAll: () => Promise<void>;
  deleteAll: () => Promise<void>;
}

interface Built {
  center: NotificationCenter;
  baseUrl: string;
  userKey: string | undefined;
}

/** `center` is `null` until the provider's effect has built it (and on the server). */
const CenterContext = createContext<{ center: NotificationCenter | null } | null>(null);

/**
 * One notification centre (one socket, one store) for every hook below it. The centre is
 * built and connected in an effect, so a server render, and a StrictMode mount that React
 * unmounts at once, open no socket; until then the hooks show the empty, `idle` state.
 */
export function NotificationsProvider(props: NotificationsProviderProps): ReactNode {
  const { baseUrl, userKey, children } = props;
  // Read when a centre is built, and by its callbacks: new functions on each render reconnect
  // nothing.
  const latest = useRef(props);
  latest.current = props;

  const [built, setBuilt] = useState<Built | null>(null);

  useEffect(() => {
    const options = latest.current;
    const shared = userKey !== undefined && options.shareAcrossTabs !== false;
    const center = new NotificationCenter({
      ...options,
      baseUrl,
      getToken: (request) => latest.current.getToken(request),
      onNotification: (item) => latest.current.onNotification?.(item),
      createSocket:
        options.createSocket ??
        (shared
          ? (socket) => new SharedSocket({ ...socket, channelName: channelName(baseUrl, userKey) })
          : undefined),
    });
    center.connect();
    setBuilt({ center, baseUrl, userKey });
    return () => center.close();
  }, [baseUrl, userKey]);

  // Between the render with a new user and the effect that builds its centre, the previous
  // user's centre must not show.
  const isCurrent = built?.baseUrl === baseUrl && built.userKey === userKey;
  const center = isCurrent ? built.center : null;
  const value = useMemo(() => ({ center }), [center]);
  return createElement(CenterContext.Provider, { value }, children);
}

/** The notification centre of the provider's user, live. */
export function useNotifications(): UseNotifications {
  const center = useCenter('useNotifications');
  const state = useCenterState(center, (current) => current);
  const { items } = useCenterState(center, () => center?.store.view() ?? EMPTY_VIEW);
  const calls = useMemo(() => centerCalls(center), [center]);
  return {
    items,
    unreadCount: state.unreadCount,
    counts: state.counts,
    connection: state.connection,
    authError: state.authError,
    hasMore: state.hasMore,
    isLoadingMore: state.isLoadingMore,
    loadError: state.loadError,
    ...calls,
  };
}

/** The calls of `useNotifications`, made once per centre. */
function centerCalls(center: NotificationCenter | null) {
  const change = (call: (center: NotificationCenter, id: string) => Promise<void>) => {
    return (id: string) => withCenter(center, (c) => call(c, id));
  };
  return {
    loadMore: () => center?.loadMore() ?? Promise.resolve(),
    markRead: change((c, id) => c.markRead(id)),
    markUnread: change((c, id) => c.markUnread(id)),
    markSeen: change((c, id) => c.markSeen(id)),
    archive: change((c, id) => c.archive(id)),
    unarchive: change((c, id) => c.unarchive(id)),
    remove: change((c, id) => c.remove(id)),
    markAllRead: () => withCenter(center, (c) => c.markAllRead()),
    markAllSeen: () => withCenter(center, (c) => c.markAllSeen()),
    retryNow: () => center?.retryNow(),
  };
}

/**
 * One view of the feed over the same store: its items (derived from the store by the
 * filter), its own pages, and its bulk calls. `view` may be a new object on each render: two
 * equal filters are one view.
 */
export function useNotificationView(view: ViewFilter = VIEWS.inbox): UseNotificationView {
  const center = useCenter('useNotificationView');
  // The filter of the first render with this key: an equal new object changes nothing.
  const latest = useRef(view);
  const key = viewKey(view);
  if (viewKey(latest.current) !== key) latest.current = view;
  const filter = latest.current;
  const state = useCenterState(center, () => center?.store.view(filter) ?? EMPTY_VIEW);
  const calls = useMemo(() => viewCalls(center, filter), [center, filter]);
  return { ...state, ...calls };
}

/** The calls of `useNotificationView`, made once per centre and view. */
function viewCalls(center: NotificationCenter | null, view: ViewFilter) {
  const options: BulkOptions = {
    ...(view.types !== undefined && { types: view.types }),
    ...(view.isRead !== undefined && { isRead: view.isRead }),
  };
  const bulk = (call: (center: NotificationCenter) => Promise<BulkResult>) => {
    return () => withCenter(center, call);
  };
  return {
    loadMore: () => center?.loadMore(view) ?? Promise.resolve(),
    markAllRead: bulk((c) => c.markAllRead(options)),
    markAllSeen: bulk((c) => c.markAllSeen(options)),
    archiveAll: bulk((c) => c.archiveAll(options)),
    unarchiveAll: bulk((c) => c.unarchiveAll(options)),
    deleteAll: bulk((c) => c.deleteAll({ ...options, archived: view.archived === true })),
  };
}

/** The badge alone: re-renders only when the count changes. */
export function useUnreadCount(): number {
  return useCenterState(useCenter('useUnreadCount'), (state) => state.unreadCount);
}

/**
 * The inbox's counts (unread and unseen, in all and per type): re-renders only when they
 * change. `null` until the server sent them (a socket without per-type counts).
 */
export function useCounts(): Counts | null {
  return useCenterState(useCenter('useCounts'), (state) => state.counts);
}

function useCenter(hook: string): NotificationCenter | null {
  const slot = useContext(CenterContext);
  if (!slot) throw new Error(`${hook}() must be used inside a <NotificationsProvider>`);
  return slot.center;
}

const subscribeToNothing = () => () => undefined;

function useCenterState<T>(
  center: NotificationCenter | null,
  select: (state: NotificationState) => T,
): T {
  const store = center?.store;
  return useSyncExternalStore(
    store?.subscribe ?? subscribeToNothing,
    () => select(store?.getState() ?? EMPTY_STATE),
    () => select(EMPTY_STATE),
  );
}

function withCenter(
  center: NotificationCenter | null,
  call: (center: NotificationCenter) => Promise<unknown>,
): Promise<void> {
  if (!center) return Promise.reject(new Error('the notification centre is not started yet'));
  return call(center).then(() => undefined);
}

/** The tabs of one browser that share a socket: same service, same user. */
export function channelName(baseUrl: string, userKey: string): string {
  return `campana:${baseUrl.replace(/\/$/, '')}:${userKey}`;
}
