import { NotificationsApi } from './rest.js';
import { NotificationsSocket, type SocketOptions } from './socket.js';
import { NotificationStore, type OptimisticRead } from './store.js';
import type { GetToken } from './types.js';

export interface NotificationCenterOptions {
  baseUrl: string;
  getToken: GetToken;
  fetch?: typeof fetch;
  socket?: Partial<
    Pick<SocketOptions, 'keepaliveMs' | 'createWebSocket' | 'lifecycle' | 'random' | 'now'>
  >;
}

/** Socket, store and REST wired together: what a bell icon needs. */
export class NotificationCenter {
  readonly store = new NotificationStore();
  readonly socket: NotificationsSocket;
  readonly api: NotificationsApi;

  constructor(options: NotificationCenterOptions) {
    this.api = new NotificationsApi({
      baseUrl: options.baseUrl,
      getToken: options.getToken,
      fetch: options.fetch,
      onUnauthorized: (error) => this.socket.markUnauthorized(error),
    });
    this.socket = new NotificationsSocket({
      ...options.socket,
      baseUrl: options.baseUrl,
      getToken: options.getToken,
      onEvent: (event) => this.store.apply(event),
      onStateChange: (state, authError) => this.store.setConnection(state, authError),
    });
  }

  connect(): void {
    this.socket.connect();
  }

  close(): void {
    this.socket.close();
  }

  /** Reconnect at once: after `unauthorized` once the user signed in again, or on demand. */
  retryNow(): void {
    this.socket.retryNow();
  }

  /** Optimistic: the item reads at once, and unreads again if the server refuses. */
  markRead(id: string): Promise<void> {
    return this.readOptimistically(this.store.markReadLocally([id]), () => this.api.markRead(id));
  }

  /** Optimistic: the badge drops to 0 at once, and comes back if the server refuses. */
  markAllRead(): Promise<void> {
    return this.readOptimistically(this.store.markReadLocally('all'), () => this.api.markAllRead());
  }

  /** The badge from REST; the socket's counts win over it when they arrive meanwhile. */
  refreshUnreadCount(): Promise<void> {
    return this.store.refreshUnreadCount(() => this.api.unreadCount()).catch(() => undefined);
  }

  private async readOptimistically(
    read: OptimisticRead,
    call: () => Promise<unknown>,
  ): Promise<void> {
    try {
      await call();
    } catch (error) {
      // Signed out, the count would be refused too; the next connection brings it.
      if (read.rollBack() && this.socket.state !== 'unauthorized') void this.refreshUnreadCount();
      throw error;
    }
    // The server answered before its events reached the socket: ask for the count rather
    // than wait for one that may never come (the item was already read on the server).
    if (read.commit()) void this.refreshUnreadCount();
  }
}
