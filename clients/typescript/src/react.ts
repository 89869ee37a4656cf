'use client';

import {
  createContext,
  createElement,
  useCallback,
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
import { EMPTY_STATE, itemsOf, type NotificationState } from './store.js';
import type { ConnectionState, NotificationItem } from './types.js';

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
  items: NotificationItem[];
  unreadCount: number;
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
  markRead: (id: string) => Promise<void>;
  markAllRead: () => Promise<void>;
  /** Reconnect at once, e.g. after the user signed in again. */
  retryNow: () => void;
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
  const { notificationsById, orderedIds } = state;
  const items = useMemo(
    () => itemsOf({ notificationsById, orderedIds }),
    [notificationsById, orderedIds],
  );
  return {
    items,
    unreadCount: state.unreadCount,
    connection: state.connection,
    authError: state.authError,
    hasMore: state.hasMore,
    isLoadingMore: state.isLoadingMore,
    loadError: state.loadError,
    loadMore: useCallback(() => center?.loadMore() ?? Promise.resolve(), [center]),
    markRead: useCallback((id: string) => withCenter(center, (c) => c.markRead(id)), [center]),
    markAllRead: useCallback(() => withCenter(center, (c) => c.markAllRead()), [center]),
    retryNow: useCallback(() => center?.retryNow(), [center]),
  };
}

/** The badge alone: re-renders only when the count changes. */
export function useUnreadCount(): number {
  return useCenterState(useCenter('useUnreadCount'), (state) => state.unreadCount);
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
  call: (center: NotificationCenter) => Promise<void>,
): Promise<void> {
  if (!center) return Promise.reject(new Error('the notification centre is not started yet'));
  return call(center);
}

/** The tabs of one browser that share a socket: same service, same user. */
export function channelName(baseUrl: string, userKey: string): string {
  return `campana:${baseUrl.replace(/\/$/, '')}:${userKey}`;
}
