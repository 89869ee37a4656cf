import { useCallback, useEffect, useMemo, useRef, useSyncExternalStore } from 'react';

import { NotificationCenter, type NotificationCenterOptions } from './center.js';
import type { UnauthorizedError } from './socket.js';
import type { ConnectionState, GetToken, NotificationItem } from './types.js';

export interface UseNotifications {
  items: NotificationItem[];
  unreadCount: number;
  connection: ConnectionState;
  /** Why `connection` is `unauthorized` (signed out, not offline); `null` otherwise. */
  authError: UnauthorizedError | null;
  markRead: (id: string) => Promise<void>;
  markAllRead: () => Promise<void>;
  /** Reconnect at once, e.g. after the user signed in again. */
  retryNow: () => void;
}

/**
 * The notification centre of one user, live. A new `getToken` function on each render
 * does not reconnect: the latest one is used for the next token.
 */
export function useNotifications(
  baseUrl: string,
  getToken: GetToken,
  options: Omit<NotificationCenterOptions, 'baseUrl' | 'getToken'> = {},
): UseNotifications {
  const tokenRef = useRef(getToken);
  tokenRef.current = getToken;
  const optionsRef = useRef(options);

  const center = useMemo(
    () =>
      new NotificationCenter({
        ...optionsRef.current,
        baseUrl,
        getToken: (request) => tokenRef.current(request),
      }),
    [baseUrl],
  );

  useEffect(() => {
    center.connect();
    return () => center.close();
  }, [center]);

  const state = useSyncExternalStore(center.store.subscribe, center.store.getState);
  const items = useMemo(() => {
    void state;
    return center.store.items();
  }, [center, state]);

  return {
    items,
    unreadCount: state.unreadCount,
    connection: state.connection,
    authError: state.authError,
    markRead: useCallback((id: string) => center.markRead(id), [center]),
    markAllRead: useCallback(() => center.markAllRead(), [center]),
    retryNow: useCallback(() => center.retryNow(), [center]),
  };
}
