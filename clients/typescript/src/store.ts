import type { UnauthorizedError } from './socket.js';
import type { ConnectionState, NotificationItem, ServerEvent } from './types.js';

export interface NotificationState {
  readonly notificationsById: ReadonlyMap<string, NotificationItem>;
  /** Newest first: `created_at` descending, then `id` descending, like the server. */
  readonly orderedIds: readonly string[];
  /**
   * The badge: the server's last count, less this tab's reads that the count does not
   * include yet (see `markReadLocally`).
   */
  readonly unreadCount: number;
  readonly connection: ConnectionState;
  /** Why `connection` is `unauthorized`; `null` otherwise. */
  readonly authError: UnauthorizedError | null;
  /**
   * Older items may exist on the server. False until the first snapshot (nothing to page
   * from yet); then true if it held any item, until a page comes without a next one. An
   * empty snapshot means an empty inbox: nothing older.
   */
  readonly hasMore: boolean;
  /** A page of older items is on its way. */
  readonly isLoadingMore: boolean;
  /** Why the last page failed; `null` once a page arrives or another is asked for. */
  readonly loadError: unknown | null;
}

export type Listener = () => void;

/**
 * A read shown before the server confirms it. Settle it once with the REST call's outcome;
 * each method returns true when the badge needs a count from the server to be exact
 * (`NotificationStore.refreshUnreadCount`).
 */
export interface OptimisticRead {
  /** The server applied the read. */
  commit(): boolean;
  /** The call failed: unread again what the server has not confirmed meanwhile. */
  rollBack(): boolean;
}

interface PendingRead {
  /** The held items the call reads. */
  readonly targets: readonly string[];
  /** Shown read here, not yet read in the server's last word (event, snapshot or count). */
  readonly unconfirmed: Set<string>;
  /** A mark-all-read whose count of 0 has not arrived. */
  all: boolean;
  /** An unread count arrived after the read began: the badge holds the server's truth. */
  countArrived: boolean;
  /** The call succeeded; the read is done once a count arrives. */
  committed: boolean;
}

/** What a store holds before anything arrives; also what a server render shows. */
export const EMPTY_STATE: NotificationState = Object.freeze({
  notificationsById: new Map(),
  orderedIds: [],
  unreadCount: 0,
  connection: 'idle',
  authError: null,
  hasMore: false,
  isLoadingMore: false,
  loadError: null,
});

/**
 * The notification list and badge, framework-free. Every event applies idempotently: items
 * are keyed by id, a snapshot merges into what is held, a read item never turns unread again
 * (the server never un-reads), and `unread_count.updated` is the truth for the badge, less
 * the optimistic reads it does not include yet. Each change makes a new state object (for
 * `useSyncExternalStore`).
 */
export class NotificationStore {
  private state: NotificationState = EMPTY_STATE;
  private readonly listeners = new Set<Listener>();
  /** The last unread count the server sent (socket) or answered (REST). */
  private serverCount = 0;
  /** How many counts the socket delivered: tells whether a REST count was overtaken. */
  private socketCounts = 0;
  private readonly pending = new Set<PendingRead>();
  /** A page arrived: from then on pages, not snapshots, say whether older items exist. */
  private paged = false;
  /** A snapshot or a page arrived: `hasMore` is known. */
  private known = false;
  /**
   * Our reads the server has just confirmed (`notification.read`, a read item in a
   * snapshot) whose count is not in `serverCount` yet. The server sends that count as the
   * very next frame, or drops it when it already sent a newer one, which includes the read:
   * either way the next frame settles them, and the badge does not bounce in between.
   */
  private readonly confirmedAwaitingCount = new Set<string>();
  /**
   * Our reads that a REST page showed as done. No count follows a page, but one that includes
   * them is on its way to the socket (or comes with the next snapshot): only a count settles
   * them.
   */
  private readonly confirmedByPage = new Set<string>();

  getState = (): NotificationState => this.state;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** The held items, newest first. */
  items(): NotificationItem[] {
    return itemsOf(this.state);
  }

  has(id: string): boolean {
    return this.state.notificationsById.has(id);
  }

  /** One frame from the socket. */
  apply(event: ServerEvent): void {
    if (event.event === 'unread_count.updated') {
      this.socketCounts += 1;
      this.applyCount(event.payload.count);
      return;
    }
    this.confirmedAwaitingCount.clear();
    switch (event.event) {
      case 'snapshot': {
        const merged = this.merged(event.payload);
        const held = (merged.orderedIds ?? this.state.orderedIds).length;
        this.known = true;
        this.update(this.paged ? merged : { ...merged, hasMore: held > 0 });
        return;
      }
      case 'notification.created':
        this.upsert([event.payload]);
        return;
      case 'notification.read':
        this.confirmRead(event.payload.id);
        this.publish(withRead(this.state.notificationsById, [event.payload.id]));
        return;
      default:
        this.publish(); // keepalive, and any event added later: it may settle the badge
        return;
    }
  }

  setConnection(connection: ConnectionState, authError: UnauthorizedError | null = null): void {
    this.update({ connection, authError });
  }

  /**
   * Add or replace items (from a snapshot or an event; pages go through `addPage`). An item
   * held as read stays read whatever the copy says: the copy is older, or our read is still
   * pending.
   */
  upsert(items: readonly NotificationItem[]): void {
    this.update(this.merged(items));
  }

  /** Whether a page may bring older items: `hasMore`, or nothing known yet (no snapshot). */
  mayHaveOlder(): boolean {
    return this.state.hasMore || !this.known;
  }

  /** A page of older items is on its way. */
  loadingMore(): void {
    this.update({ isLoadingMore: true, loadError: null });
  }

  /** Merge a page of older items; `hasMore: false` when the server named no next page. */
  addPage(items: readonly NotificationItem[], { hasMore }: { hasMore: boolean }): void {
    const merged = this.merged(items, this.confirmedByPage);
    this.paged = true;
    this.known = true;
    this.update({ ...merged, hasMore, isLoadingMore: false, loadError: null });
  }

  /** Older items may exist again (a gap opened below a new snapshot). */
  reopenPages(): void {
    if (!this.state.hasMore) this.update({ hasMore: true });
  }

  loadMoreFailed(error: unknown): void {
    this.update({ isLoadingMore: false, loadError: error });
  }

  /**
   * Show items read at once (`'all'`: every held item, and a badge of 0) while the REST call
   * runs; settle the returned read with the call's outcome.
   */
  markReadLocally(ids: readonly string[] | 'all'): OptimisticRead {
    const byId = this.state.notificationsById;
    const targets = (ids === 'all' ? [...byId.keys()] : ids).filter((id) => byId.has(id));
    const read: PendingRead = {
      targets,
      unconfirmed: new Set(targets.filter((id) => byId.get(id)?.is_read === false)),
      all: ids === 'all',
      countArrived: false,
      committed: false,
    };
    this.pending.add(read);
    this.publish(withRead(byId, read.unconfirmed));
    return { commit: () => this.commitRead(read), rollBack: () => this.rollBackRead(read) };
  }

  /**
   * Ask the server for the count (REST), for when no socket count will settle the badge.
   * A socket count that arrives meanwhile wins: socket counts come in order and each later
   * change sends another, while nothing would correct a REST answer that is older.
   */
  async refreshUnreadCount(fetchCount: () => Promise<number>): Promise<void> {
    const socketCountsBefore = this.socketCounts;
    const count = await fetchCount();
    if (this.socketCounts !== socketCountsBefore || !Number.isInteger(count) || count < 0) return;
    this.applyCount(count);
  }

  private applyCount(count: number): void {
    this.serverCount = count;
    this.confirmedAwaitingCount.clear();
    this.confirmedByPage.clear();
    for (const read of this.pending) {
      read.countArrived = true;
      if (count === 0) {
        read.unconfirmed.clear();
        read.all = false;
      }
      // The server answered before this count was sent, so it includes the read.
      if (read.committed) this.pending.delete(read);
    }
    const byId = this.state.notificationsById;
    // "Mark all read" sends only this count; at 0 nothing held can still be unread.
    this.publish(count === 0 ? withRead(byId, [...byId.keys()]) : byId);
  }

  /**
   * The server says `id` is read: none of our reads may roll it back any more, and the badge
   * leaves it out until a count that includes it (`awaitingCount`).
   */
  private confirmRead(id: string, awaitingCount = this.confirmedAwaitingCount): void {
    for (const read of this.pending) {
      if (read.unconfirmed.delete(id)) awaitingCount.add(id);
    }
  }

  private commitRead(read: PendingRead): boolean {
    if (!this.pending.has(read)) return false;
    const byId = this.state.notificationsById;
    // Every target is read on the server now, even one a concurrent failed call unread again.
    for (const id of read.targets) if (byId.get(id)?.is_read === false) read.unconfirmed.add(id);
    read.committed = true;
    const awaitingCount = read.all || read.unconfirmed.size > 0;
    if (!awaitingCount) this.pending.delete(read);
    this.publish(withRead(byId, read.targets));
    return awaitingCount;
  }

  private rollBackRead(read: PendingRead): boolean {
    if (!this.pending.delete(read)) return false;
    this.publish(withUnread(this.state.notificationsById, read.unconfirmed));
    // Without a count since the read began, the server may have applied it all the same
    // (a proxy's 504): the badge cannot tell, only the server can.
    return !read.countArrived;
  }

  /** The items and badge once `items` are merged (see `upsert` and `confirmRead`). */
  private merged(
    items: readonly NotificationItem[],
    confirmedAwaitingCount = this.confirmedAwaitingCount,
  ): Partial<NotificationState> {
    if (items.length === 0) return this.badgeChange();
    const byId = new Map(this.state.notificationsById);
    for (const item of items) {
      const heldAsRead = byId.get(item.id)?.is_read === true;
      byId.set(item.id, heldAsRead && !item.is_read ? { ...item, is_read: true } : item);
      if (item.is_read) this.confirmRead(item.id, confirmedAwaitingCount);
    }
    return this.badgeChange(byId, sortNewestFirst(byId));
  }

  /** Make `unreadCount` follow the server's count and the pending reads. */
  private publish(
    notificationsById: ReadonlyMap<string, NotificationItem> = this.state.notificationsById,
    orderedIds: readonly string[] = this.state.orderedIds,
  ): void {
    this.update(this.badgeChange(notificationsById, orderedIds));
  }

  private badgeChange(
    notificationsById: ReadonlyMap<string, NotificationItem> = this.state.notificationsById,
    orderedIds: readonly string[] = this.state.orderedIds,
  ): Partial<NotificationState> {
    return { notificationsById, orderedIds, unreadCount: this.badge(notificationsById) };
  }

  private badge(byId: ReadonlyMap<string, NotificationItem>): number {
    // A pending mark-all-read reads everything the server counts; what shows unread arrived
    // since (and the server's count of 0, when it comes, reads that too).
    if ([...this.pending].some((read) => read.all)) {
      return [...byId.values()].filter((item) => !item.is_read).length;
    }
    const notCounted = new Set([...this.confirmedAwaitingCount, ...this.confirmedByPage]);
    for (const read of this.pending) for (const id of read.unconfirmed) notCounted.add(id);
    return Math.max(0, this.serverCount - notCounted.size);
  }

  private update(change: Partial<NotificationState>): void {
    const changed = (Object.keys(change) as (keyof NotificationState)[]).some(
      (key) => change[key] !== this.state[key],
    );
    if (!changed) return;
    this.state = { ...this.state, ...change };
    for (const listener of this.listeners) listener();
  }
}

/** The items of `state`, newest first. */
export function itemsOf(
  state: Pick<NotificationState, 'notificationsById' | 'orderedIds'>,
): NotificationItem[] {
  const { notificationsById, orderedIds } = state;
  return orderedIds.map((id) => notificationsById.get(id)).filter(isItem);
}

function isItem(item: NotificationItem | undefined): item is NotificationItem {
  return item !== undefined;
}

/** `byId` with `ids` read; the same map when none changes. */
function withRead(
  byId: ReadonlyMap<string, NotificationItem>,
  ids: Iterable<string>,
): ReadonlyMap<string, NotificationItem> {
  return withReadState(byId, ids, true);
}

function withUnread(
  byId: ReadonlyMap<string, NotificationItem>,
  ids: Iterable<string>,
): ReadonlyMap<string, NotificationItem> {
  return withReadState(byId, ids, false);
}

function withReadState(
  byId: ReadonlyMap<string, NotificationItem>,
  ids: Iterable<string>,
  isRead: boolean,
): ReadonlyMap<string, NotificationItem> {
  let changed: Map<string, NotificationItem> | null = null;
  for (const id of ids) {
    const item = byId.get(id);
    if (!item || item.is_read === isRead) continue;
    changed ??= new Map(byId);
    changed.set(id, { ...item, is_read: isRead });
  }
  return changed ?? byId;
}

/** `created_at` to a sortable key: milliseconds, then the microseconds Date drops. */
function timeKey(createdAt: string): [number, number] {
  const micros = /\.(\d+)/.exec(createdAt)?.[1] ?? '';
  return [Date.parse(createdAt), Number(micros.padEnd(6, '0').slice(3, 6))];
}

function sortNewestFirst(byId: ReadonlyMap<string, NotificationItem>): string[] {
  const keyed = [...byId.values()].map((item) => ({ id: item.id, key: timeKey(item.created_at) }));
  keyed.sort(
    (a, b) =>
      b.key[0] - a.key[0] || b.key[1] - a.key[1] || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0),
  );
  return keyed.map((entry) => entry.id);
}
