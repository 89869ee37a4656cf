import {
  NotificationsApi,
  type BulkOptions,
  type BulkResult,
  type DeleteAllOptions,
} from './rest.js';
import { NotificationsSocket, type SocketOptions } from './socket.js';
import {
  NotificationStore,
  type BulkScope,
  type ItemChange,
  type OptimisticChange,
} from './store.js';
import { TokenCache } from './token.js';
import type { ConnectionState, GetToken, NotificationItem, ServerEvent } from './types.js';
import { INBOX_KEY, viewKey, VIEWS, type ViewFilter } from './views.js';

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
   * Open the socket with `&counts=1`, for the per-type counts (`state.counts`, `useCounts`);
   * true by default. Off, the socket is the guide's, and `counts` stays `null`.
   */
  counts?: boolean;
  /** The server's `CAMPANA_SNAPSHOT_SIZE` (20 by default): see `StoreOptions`. */
  snapshotSize?: number;
  /**
   * Called once for each notification that arrives live (`notification.created` of an item
   * not held yet), after the store has it: for a toast or a sound. Items of snapshots,
   * pages and a joining tab's replay are not news, and an item is never announced twice.
   * Only a visible page announces: with the socket shared by every tab of the browser, a
   * sound would otherwise play once per open tab.
   */
  onNotification?: (item: NotificationItem) => void;
}

/** The part of a view's paging the centre keeps: where its next page starts. */
interface ViewPager {
  /** The `next` of its last page; `undefined` before the first one (the newest page). */
  cursor: string | undefined;
  loading: Promise<void> | null;
}

const READ: ItemChange = { is_read: true, is_seen: true };

/** Socket, store and REST wired together: what a bell icon needs. */
export class NotificationCenter {
  readonly store: NotificationStore;
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
  /** The views other than the inbox that paged, by `viewKey`. */
  private readonly pagers = new Map<string, ViewPager>();

  constructor(options: NotificationCenterOptions) {
    this.store = new NotificationStore({ snapshotSize: options.snapshotSize });
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
      counts: options.counts ?? true,
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
   * Fetch the next page of a view (the inbox by default: the items older than the oldest
   * held), and merge it. Calls made while a page is on its way share it; nothing happens once
   * the server said there is no older page. A view other than the inbox starts from its
   * newest page and follows the server's cursor. Never rejects: a failure is in the state's
   * `loadError` (the view's, `store.view(view).loadError`), and the next call tries again.
   */
  loadMore(view: ViewFilter = VIEWS.inbox): Promise<void> {
    const key = viewKey(view);
    if (key !== INBOX_KEY) return this.loadView(key, view);
    if (!this.store.mayHaveOlder()) return Promise.resolve();
    this.loading ??= this.fetchOlderPage().finally(() => (this.loading = null));
    return this.loading;
  }

  /** Optimistic, as every change below: shown at once, undone if the server refuses. */
  markRead(id: string): Promise<void> {
    return this.changeOne(id, READ, () => this.api.markRead(id));
  }

  /** Unread again (it stays seen). */
  markUnread(id: string): Promise<void> {
    return this.changeOne(id, { is_read: false }, () => this.api.markUnread(id));
  }

  markSeen(id: string): Promise<void> {
    return this.changeOne(id, { is_seen: true }, () => this.api.markSeen(id));
  }

  /** Out of the inbox, into the archived view. */
  archive(id: string): Promise<void> {
    return this.changeOne(id, { is_archived: true }, () => this.api.archive(id));
  }

  unarchive(id: string): Promise<void> {
    return this.changeOne(id, { is_archived: false }, () => this.api.unarchive(id));
  }

  /** Deleted for good. */
  remove(id: string): Promise<void> {
    return this.changeOne(id, { deleted: true }, () => this.api.remove(id));
  }

  /**
   * Every unread inbox item (of `types`, when given) read: the badge drops at once, and
   * comes back if the server refuses. Like every bulk call below, only the items at or older
   * than `upTo` change, by default the newest item held, so that one arriving during the call
   * stays as it is.
   */
  markAllRead(options: BulkOptions = {}): Promise<BulkResult> {
    return this.changeAll({ archived: false }, READ, options, (body) => this.api.markAllRead(body));
  }

  /** Every inbox item seen: what the bell's opening does. Unread ones stay unread. */
  markAllSeen(options: BulkOptions = {}): Promise<BulkResult> {
    return this.changeAll({ archived: false }, { is_seen: true }, options, (body) =>
      this.api.markAllSeen(body),
    );
  }

  /** Inbox items into the archived view (`isRead: true`: the read ones only). */
  archiveAll(options: BulkOptions = {}): Promise<BulkResult> {
    return this.changeAll({ archived: false }, { is_archived: true }, options, (body) =>
      this.api.archiveAll(body),
    );
  }

  /** Archived items back into the inbox. */
  unarchiveAll(options: BulkOptions = {}): Promise<BulkResult> {
    return this.changeAll({ archived: true }, { is_archived: false }, options, (body) =>
      this.api.unarchiveAll(body),
    );
  }

  /** Empty the inbox, or the archived view with `archived: true`. */
  deleteAll({ archived = false, ...options }: DeleteAllOptions = {}): Promise<BulkResult> {
    return this.changeAll({ archived }, { deleted: true }, options, (body) =>
      this.api.deleteAll({ ...body, ...(archived && { archived }) }),
    );
  }

  /** The badge from REST; the socket's counts win over it when they arrive meanwhile. */
  refreshUnreadCount(): Promise<void> {
    return this.store.refreshUnreadCount(() => this.api.unreadCount()).catch(() => undefined);
  }

  /**
   * Every count from REST (`GET /counts`) once the server has shown it has per-type counts;
   * the unread count alone before. The socket's counts win when they arrive meanwhile.
   */
  refreshCounts(): Promise<void> {
    if (!this.store.countsKnown()) return this.refreshUnreadCount();
    return this.store.refreshCounts(() => this.api.getCounts()).catch(() => undefined);
  }

  private receive(event: ServerEvent, replayed: boolean): void {
    const created = event.event === 'notification.created' ? event.payload : undefined;
    const heldBefore = created !== undefined && this.store.has(created.id);
    const oldest = event.event === 'snapshot' ? event.payload.at(-1) : undefined;
    const maybeGap = oldest !== undefined && !this.store.has(oldest.id);
    this.store.apply(event);
    if (maybeGap) this.noticeGap(oldest.id);
    // News: not held before, held now (a duplicate of a deleted item is not).
    const news = created !== undefined && !heldBefore && this.store.has(created.id);
    if (news && !replayed && pageIsVisible()) this.onNotification?.(created);
  }

  /** A new snapshot's oldest item sits above held inbox items it did not reach: page from it. */
  private noticeGap(oldestId: string): void {
    const ids = this.store.items().map((item) => item.id);
    if (ids.indexOf(oldestId) >= ids.length - 1) return; // nothing older held: no gap
    this.beforeGap ??= { cursor: this.cursor, hasMore: this.store.getState().hasMore };
    this.cursor = oldestId;
    this.pageGeneration += 1;
    this.store.reopenPages();
  }

  private async fetchOlderPage(): Promise<void> {
    // The first page starts after the oldest inbox item held (the snapshot's); with nothing
    // held yet, from the newest. Later pages follow the server's cursor, which live items and
    // snapshots cannot move: they are all newer.
    const before = this.cursor ?? this.store.items().at(-1)?.id;
    const generation = this.pageGeneration;
    const mark = this.store.loadingMore();
    try {
      const page = await this.api.page({ before, limit: this.pageSize });
      if (generation !== this.pageGeneration) {
        // A gap opened meanwhile and moved the cursor: keep the items, not the position.
        this.store.addPage(page.items, { hasMore: this.store.getState().hasMore, mark });
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
      this.store.addPage(page.items, { hasMore, mark });
    } catch (error) {
      this.store.loadMoreFailed(error);
    }
  }

  private loadView(key: string, view: ViewFilter): Promise<void> {
    if (!this.store.view(view).hasMore) return Promise.resolve();
    let pager = this.pagers.get(key);
    if (!pager) {
      pager = { cursor: undefined, loading: null };
      this.pagers.set(key, pager);
    }
    const own = pager;
    own.loading ??= this.fetchViewPage(view, own).finally(() => (own.loading = null));
    return own.loading;
  }

  private async fetchViewPage(view: ViewFilter, pager: ViewPager): Promise<void> {
    const mark = this.store.loadingMore(view);
    try {
      const page = await this.api.page({
        before: pager.cursor,
        limit: this.pageSize,
        archived: view.archived,
        types: view.types,
        isRead: view.isRead,
        isSeen: view.isSeen,
      });
      if (page.next !== null) pager.cursor = page.next;
      this.store.addPage(page.items, { hasMore: page.next !== null, mark, view });
    } catch (error) {
      this.store.loadMoreFailed(error, view);
    }
  }

  private changeOne(id: string, change: ItemChange, call: () => Promise<unknown>): Promise<void> {
    return this.optimistically(this.store.changeLocally([id], change), call).then(() => undefined);
  }

  private changeAll(
    scope: Pick<BulkScope, 'archived'>,
    change: ItemChange,
    options: BulkOptions,
    call: (options: BulkOptions) => Promise<BulkResult>,
  ): Promise<BulkResult> {
    // The newest item held: an item that arrives while the call runs is newer, and unchanged.
    const upTo = options.upTo ?? this.store.newestId({ archived: scope.archived });
    const body = { ...options, ...(upTo !== undefined && { upTo }) };
    const local = this.store.changeAllLocally({ ...scope, ...body }, change);
    return this.optimistically(local, () => call(body));
  }

  private async optimistically<T>(change: OptimisticChange, call: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await call();
    } catch (error) {
      // Signed out, the counts would be refused too; the next connection brings them.
      if (change.rollBack() && this.socket.state !== 'unauthorized') void this.refreshCounts();
      throw error;
    }
    // The server answered before its events reached the socket: ask for the counts rather
    // than wait for ones that may never come (the item was already so on the server).
    if (change.commit()) void this.refreshCounts();
    return result;
  }
}

/** Outside a browser (tests, server rendering) every page counts as visible. */
function pageIsVisible(): boolean {
  return typeof document === 'undefined' || document.visibilityState !== 'hidden';
}
