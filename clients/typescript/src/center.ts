import { NotificationsApi } from './rest.js';
import { NotificationsSocket, type SocketOptions } from './socket.js';
import { NotificationStore, type OptimisticRead } from './store.js';
import { TokenCache } from './token.js';
import type { ConnectionState, GetToken, NotificationItem, ServerEvent } from './types.js';

/**
 * What the centre needs of its socket. `NotificationsSocket` is one; a socket shared between
 * tabs, built from the same options, can be another.
 */
export interface SocketLike {
  readonly state: ConnectionState;
  connect(): void;
  close(): void;
  retryNow(): void;
  markUnauthorized(cause: unknown): void;
}

export interface NotificationCenterOptions {
  baseUrl: string;
  getToken: GetToken;
  fetch?: typeof fetch;
  socket?: Partial<
    Pick<
      SocketOptions,
      'keepaliveMs' | 'tokenTimeoutMs' | 'createWebSocket' | 'lifecycle' | 'random' | 'now'
    >
  >;
  /** Builds the socket from its options; `new NotificationsSocket(options)` by default. */
  createSocket?: (options: SocketOptions) => SocketLike;
  /** How many older items `loadMore()` asks for at a time; 20 by default (at most 100). */
  pageSize?: number;
  /**
   * Called once for each notification that arrives live (`notification.created` of an item
   * not held yet), after the store has it: for a toast or a sound. Items of snapshots,
   * pages and a joining tab's replay are not news, and an item is never announced twice.
   * Only a visible page announces: with the socket shared by every tab of the browser, a
   * sound would otherwise play once per open tab.
   */
  onNotification?: (item: NotificationItem) => void;
}

/** Socket, store and REST wired together: what a bell icon needs. */
export class NotificationCenter {
  readonly store = new NotificationStore();
  readonly socket: SocketLike;
  readonly api: NotificationsApi;
  private readonly pageSize: number;
  private readonly onNotification: ((item: NotificationItem) => void) | undefined;
  /** The `next` of the last page; `undefined` before the first one. */
  private cursor: string | undefined;
  private loading: Promise<void> | null = null;
  /**
   * Set while paging through a gap: a snapshot (after a reconnect) whose oldest item is
   * newer than items held, with items in between that no event brought. Pages walk down
   * from the snapshot until they reach held items, then paging resumes where it was.
   */
  private beforeGap: { cursor: string | undefined; hasMore: boolean } | null = null;
  /** Moves when the cursor is reset: a page asked for before that is merged, not followed. */
  private pageGeneration = 0;

  constructor(options: NotificationCenterOptions) {
    this.pageSize = options.pageSize ?? 20;
    this.onNotification = options.onNotification;
    // One token for the socket and REST, kept while it lasts: see TokenCache.
    const tokens = new TokenCache(options.getToken, options.socket?.now);
    this.api = new NotificationsApi({
      baseUrl: options.baseUrl,
      getToken: tokens.get,
      fetch: options.fetch,
      onUnauthorized: (error) => this.socket.markUnauthorized(error),
    });
    const createSocket = options.createSocket ?? ((socket) => new NotificationsSocket(socket));
    this.socket = createSocket({
      ...options.socket,
      baseUrl: options.baseUrl,
      getToken: tokens.get,
      onEvent: (event, replayed) => this.receive(event, replayed === true),
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

  /**
   * Fetch the page of items older than the oldest held, and merge it. Calls made while a page
   * is on its way share it; nothing happens once the server said there is no older page.
   * Never rejects: a failure is in the state's `loadError`, and the next call tries again.
   */
  loadMore(): Promise<void> {
    if (!this.store.mayHaveOlder()) return Promise.resolve();
    this.loading ??= this.fetchOlderPage().finally(() => (this.loading = null));
    return this.loading;
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

  private receive(event: ServerEvent, replayed: boolean): void {
    const news =
      !replayed && event.event === 'notification.created' && !this.store.has(event.payload.id);
    const oldest = event.event === 'snapshot' ? event.payload.at(-1) : undefined;
    const maybeGap = oldest !== undefined && !this.store.has(oldest.id);
    this.store.apply(event);
    if (maybeGap) this.noticeGap(oldest.id);
    if (news && pageIsVisible()) this.onNotification?.(event.payload);
  }

  /** A new snapshot's oldest item sits above held items it did not reach: page from it. */
  private noticeGap(oldestId: string): void {
    const ids = this.store.getState().orderedIds;
    if (ids.indexOf(oldestId) >= ids.length - 1) return; // nothing older held: no gap
    this.beforeGap ??= { cursor: this.cursor, hasMore: this.store.getState().hasMore };
    this.cursor = oldestId;
    this.pageGeneration += 1;
    this.store.reopenPages();
  }

  private async fetchOlderPage(): Promise<void> {
    // The first page starts after the oldest item held (the snapshot's); with nothing held
    // yet, from the newest. Later pages follow the server's cursor, which live items and
    // snapshots cannot move: they are all newer.
    const before = this.cursor ?? this.store.getState().orderedIds.at(-1);
    const generation = this.pageGeneration;
    this.store.loadingMore();
    try {
      const page = await this.api.page({ before, limit: this.pageSize });
      if (generation !== this.pageGeneration) {
        // A gap opened meanwhile and moved the cursor: keep the items, not the position.
        this.store.addPage(page.items, { hasMore: this.store.getState().hasMore });
        return;
      }
      let hasMore = page.next !== null;
      if (page.next !== null) this.cursor = page.next;
      const gap = this.beforeGap;
      if (gap !== null && (!hasMore || page.items.some((item) => this.store.has(item.id)))) {
        // The gap is filled: this page reached items held before it opened.
        this.beforeGap = null;
        this.cursor = gap.cursor ?? this.cursor;
        hasMore = hasMore && gap.hasMore;
      }
      this.store.addPage(page.items, { hasMore });
    } catch (error) {
      this.store.loadMoreFailed(error);
    }
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

/** Outside a browser (tests, server rendering) every page counts as visible. */
function pageIsVisible(): boolean {
  return typeof document === 'undefined' || document.visibilityState !== 'hidden';
}
