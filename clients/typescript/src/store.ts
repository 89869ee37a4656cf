import { NOTIFICATION_TYPES } from './protocol.js';
import type { UnauthorizedError } from './socket.js';
import type {
  BulkChange,
  BulkFilter,
  ConnectionState,
  Counts,
  NotificationItem,
  NotificationType,
  ServerEvent,
  TypeCounts,
} from './types.js';
import {
  INBOX_KEY,
  inView,
  newestFirst,
  sortKey,
  viewKey,
  VIEWS,
  withinInbox,
  type SortKey,
  type ViewFilter,
} from './views.js';

/** The paging of one view. */
export interface ViewPaging {
  /** Older items of the view may exist on the server. */
  readonly hasMore: boolean;
  /** A page of the view is on its way. */
  readonly isLoadingMore: boolean;
  /** Why the view's last page failed; `null` once a page arrives or another is asked for. */
  readonly loadError: unknown | null;
}

/** A view's items, newest first, and its paging. */
export interface ViewState extends ViewPaging {
  readonly items: readonly NotificationItem[];
}

export interface NotificationState {
  /** Every item held, of every view: the archived ones too. */
  readonly notificationsById: ReadonlyMap<string, NotificationItem>;
  /** Newest first: `created_at` descending, then `id` descending, like the server. */
  readonly orderedIds: readonly string[];
  /**
   * The badge: the server's last count, with this tab's changes that the count does not
   * include yet (see `markReadLocally`, `changeLocally`).
   */
  readonly unreadCount: number;
  /**
   * The inbox's unread and unseen counts, in all and per type: the server's last
   * `counts.updated` (or `GET /counts`), with this tab's changes it does not include yet.
   * `null` until the server sent any (a socket opened without `counts=1`). Its `unread` is
   * `unreadCount`.
   */
  readonly counts: Counts | null;
  readonly connection: ConnectionState;
  /** Why `connection` is `unauthorized`; `null` otherwise. */
  readonly authError: UnauthorizedError | null;
  /**
   * Older items of the inbox may exist on the server. False until the first snapshot
   * (nothing to page from yet); then true if it held any item, until a page comes without a
   * next one. An empty snapshot means an empty inbox: nothing older.
   */
  readonly hasMore: boolean;
  /** A page of older inbox items is on its way. */
  readonly isLoadingMore: boolean;
  /** Why the inbox's last page failed; `null` once a page arrives or another is asked for. */
  readonly loadError: unknown | null;
  /** The paging of the views other than the inbox, by `viewKey`, once they paged. */
  readonly views: ReadonlyMap<string, ViewPaging>;
}

export type Listener = () => void;

/**
 * A change shown before the server confirms it. Settle it once with the REST call's
 * outcome; each method returns true when the counts need the server's word to be exact
 * (`NotificationStore.refreshCounts`, or `refreshUnreadCount` without per-type counts).
 */
export interface OptimisticChange {
  /** The server applied the change. */
  commit(): boolean;
  /** The call failed: undo what the server has not confirmed or overwritten meanwhile. */
  rollBack(): boolean;
}

/** The name the guide's read used; the same thing. */
export type OptimisticRead = OptimisticChange;

/** What an optimistic call changes on each of its items. */
export interface ItemChange {
  is_read?: boolean;
  is_seen?: boolean;
  is_archived?: boolean;
  /** Deleted for good. */
  deleted?: true;
}

/** The items a bulk call acts on: the held ones of its view, at or older than `upTo`. */
export interface BulkScope {
  archived: boolean;
  types?: readonly NotificationType[];
  isRead?: boolean;
  /** The call's `up_to`; without it, every held item of the view. */
  upTo?: string;
}

export interface StoreOptions {
  /**
   * The server's `CAMPANA_SNAPSHOT_SIZE` (20): a snapshot that holds fewer items is the
   * whole inbox, so a held inbox item it does not show has left the inbox.
   */
  snapshotSize?: number;
}

/** The server's snapshot size by default (`CAMPANA_SNAPSHOT_SIZE`). */
export const SNAPSHOT_SIZE = 20;
/**
 * How many deleted (or gone from the inbox) ids the store remembers, so that a late page or a
 * duplicate `notification.created` does not bring them back. A page or a snapshot is at most
 * 100 items, and what it could bring back is what went while it was on its way.
 */
export const REMOVED_MEMORY = 1_000;

const EMPTY_PAGING: ViewPaging = Object.freeze({
  hasMore: true,
  isLoadingMore: false,
  loadError: null,
});

/** What a store holds before anything arrives; also what a server render shows. */
export const EMPTY_STATE: NotificationState = Object.freeze({
  notificationsById: new Map(),
  orderedIds: [],
  unreadCount: 0,
  counts: null,
  connection: 'idle',
  authError: null,
  hasMore: false,
  isLoadingMore: false,
  loadError: null,
  views: new Map(),
});

/** A view of the empty state, for a render with no store yet. */
export const EMPTY_VIEW: ViewState = Object.freeze({
  items: [],
  hasMore: false,
  isLoadingMore: false,
  loadError: null,
});

/**
 * An item this tab changed, or whose change the counts do not include yet: what the server
 * said of it, and what the last counts include, so that the counts shown are the server's
 * plus exactly the difference.
 */
interface Tracked {
  /** The server's copy, as last heard; `null`: deleted, or gone from the inbox. */
  server: NotificationItem | null;
  /** The copy the last unread count includes. */
  countedUnread: NotificationItem | null;
  /** The copy the last per-type counts include. */
  countedCounts: NotificationItem | null;
  /**
   * The socket told a change the counts do not include yet. The server sends its counts next,
   * or none when no count changed: the next frame that is not an item event settles it.
   */
  settleAtFrame: boolean;
}

/** One optimistic call. */
interface Action {
  readonly change: ItemChange;
  /** Held items whose claim stands: shown changed, and no word of the server on them since. */
  readonly open: Set<string>;
  readonly bulk: boolean;
  /**
   * A bulk call that empties a part of the counts (read-all, seen-all, archive-all, delete-all
   * of the inbox): until the server's counts include it, that part is counted from the held
   * items (what arrived since the call, or was changed back).
   */
  zeroing: { types: ReadonlySet<NotificationType> | null; unread: boolean; unseen: boolean } | null;
  /** Its change moves the unread count, or the per-type counts. */
  readonly needsUnread: boolean;
  readonly needsCounts: boolean;
  /** A count arrived after the call began: the counts hold the server's truth. */
  unreadArrived: boolean;
  countsArrived: boolean;
  committed: boolean;
  /** A count that includes the change (sent after the server answered) arrived. */
  unreadSettled: boolean;
  countsSettled: boolean;
}

/**
 * Where the server's word comes from. The socket's counts follow its words (or none comes,
 * when no count changed); a page's may be on their way, or in the next snapshot's.
 */
type Source = 'socket' | 'page';

/**
 * The notification list and counts, framework-free, for every view over one store.
 *
 * The socket is the truth: its events come in the server's change order and its snapshots
 * are at least as new as what it sent before, so what it says replaces what is held. A REST
 * page can be older than the events that arrived while it was on its way: it never
 * overwrites an item the socket spoke of since the page was asked for, nor brings back an
 * item deleted. Changes made here show at once and roll back exactly (see `changeLocally`).
 * `unread_count.updated` is the truth for the badge, `counts.updated` for the per-type
 * counts, with the changes of this tab that they do not include yet. Each change makes a new
 * state object (for `useSyncExternalStore`).
 */
export class NotificationStore {
  private state: NotificationState = EMPTY_STATE;
  private readonly listeners = new Set<Listener>();
  private readonly snapshotSize: number;
  /** The last unread count the server sent (socket) or answered (REST). */
  private serverUnread = 0;
  /** The last per-type counts the server sent or answered; `null`: none yet. */
  private serverCounts: Counts | null = null;
  /** How many counts the socket delivered: tells whether a REST count was overtaken. */
  private socketCounts = 0;
  private socketCountsObjects = 0;
  private readonly pending = new Set<Action>();
  private readonly tracked = new Map<string, Tracked>();
  /** The items being changed into the next state. */
  private draft: Map<string, NotificationItem> | null = null;
  /** Numbers the socket's frames: when each item was last spoken of (`touched`). */
  private heard = 0;
  private readonly touched = new Map<string, number>();
  /** Deleted ids, and ids gone from the inbox (archived or deleted elsewhere), when. */
  private readonly removed = new Map<string, { deleted: boolean; at: number }>();
  /** The mark of each view's page on its way (`loadingMore`). */
  private readonly pageMarks = new Map<string, number>();
  /** A page arrived: from then on pages, not snapshots, say whether older items exist. */
  private paged = false;
  /** A snapshot or a page arrived: `hasMore` is known. */
  private known = false;
  /**
   * How far down each view is held without a hole: the oldest item of the inbox's snapshots
   * and pages, of a view's pages; `'end'` once a page said there is no older one. A view shows
   * the held items down to it (the older ones came with other views' pages, with holes).
   */
  private inboxFloor: SortKey | 'end' | null = null;
  private readonly floors = new Map<string, SortKey | 'end'>();
  /** Moves with every floor: a view of an unchanged state may still change. */
  private floorMoves = 0;
  private readonly viewCache = new Map<
    string,
    { state: NotificationState; floorMoves: number; view: ViewState }
  >();

  constructor(options: StoreOptions = {}) {
    this.snapshotSize = options.snapshotSize ?? SNAPSHOT_SIZE;
  }

  getState = (): NotificationState => this.state;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** The items of a view (the inbox by default), newest first. */
  items(view: ViewFilter = VIEWS.inbox): NotificationItem[] {
    return [...this.view(view).items];
  }

  /**
   * A view's items and paging; the same object while nothing changes. Items of a view older
   * than where it has paged to are left out until it pages there (they came with another
   * view's pages: what lies between is not known yet). A view of the inbox is filled by the
   * inbox's snapshot and pages too.
   */
  view(filter: ViewFilter = VIEWS.inbox): ViewState {
    const key = viewKey(filter);
    const cached = this.viewCache.get(key);
    if (cached?.state === this.state && cached.floorMoves === this.floorMoves) return cached.view;
    const floor = this.floorOf(key, filter);
    const items = itemsOf(this.state).filter(
      (item) => inView(item, filter) && (floor === null || newestFirst(sortKey(item), floor) <= 0),
    );
    const view = { items, ...this.pagingOf(key, filter) };
    this.viewCache.set(key, { state: this.state, floorMoves: this.floorMoves, view });
    return view;
  }

  has(id: string): boolean {
    return this.state.notificationsById.has(id);
  }

  /** The newest item held in the view's half (inbox or archived), else the newest held. */
  newestId(filter: ViewFilter = VIEWS.inbox): string | undefined {
    const { orderedIds, notificationsById } = this.state;
    const archived = filter.archived === true;
    return (
      orderedIds.find((id) => notificationsById.get(id)?.is_archived === archived) ?? orderedIds[0]
    );
  }

  /** The server sent per-type counts, on the socket or in answer to `GET /counts`. */
  countsKnown(): boolean {
    return this.serverCounts !== null;
  }

  /** One frame from the socket. */
  apply(event: ServerEvent): void {
    switch (event.event) {
      case 'unread_count.updated':
        this.socketCounts += 1;
        this.applyUnreadCount(event.payload.count);
        return;
      case 'counts.updated':
        this.socketCountsObjects += 1;
        this.applyCounts(event.payload);
        return;
      case 'notification.created':
        this.created(normalized(event.payload));
        break;
      case 'notification.read': {
        const held = this.serverCopy(event.payload.id);
        if (!held) break;
        this.touched.set(held.id, ++this.heard);
        this.hear(held.id, { ...held, is_read: true, is_seen: true }, 'socket');
        break;
      }
      case 'notification.updated':
        this.updated(normalized(event.payload));
        break;
      case 'notification.deleted':
        this.heard += 1;
        this.hear(event.payload.id, null, 'socket');
        this.remember(event.payload.id, true);
        break;
      case 'notifications.changed':
        this.changed(event.payload.change, event.payload.filter);
        break;
      case 'snapshot':
        this.settleFrame();
        this.snapshot(event.payload.map(normalized));
        return;
      default:
        this.settleFrame(); // keepalive, and any event added later
        break;
    }
    this.publish();
  }

  setConnection(connection: ConnectionState, authError: UnauthorizedError | null = null): void {
    this.update({ connection, authError });
  }

  /** Add or replace items with the socket's word on them (pages go through `addPage`). */
  upsert(items: readonly NotificationItem[]): void {
    this.heard += 1;
    for (const item of items.map(normalized)) {
      if (this.removed.get(item.id)?.deleted) continue;
      this.removed.delete(item.id);
      this.touched.set(item.id, this.heard);
      this.hear(item.id, item, 'socket');
    }
    this.publish();
  }

  /** Whether a page may bring older items: `hasMore`, or nothing known yet (no snapshot). */
  mayHaveOlder(): boolean {
    return this.state.hasMore || !this.known;
  }

  /**
   * A page of a view (the inbox by default) is on its way. Returns its mark for `addPage`:
   * what the socket says of an item from now on is newer than the page.
   */
  loadingMore(view: ViewFilter = VIEWS.inbox): number {
    const key = viewKey(view);
    this.pageMarks.set(key, this.heard);
    if (key === INBOX_KEY) this.update({ isLoadingMore: true, loadError: null });
    else this.update({ views: this.withPaging(key, { isLoadingMore: true, loadError: null }) });
    return this.heard;
  }

  /**
   * Merge a page of older items; `hasMore: false` when the server named no next page. An item
   * the socket spoke of after the page was asked for (`mark`, from `loadingMore`; the last
   * one of that view by default) keeps the socket's word; a deleted one stays deleted.
   */
  addPage(
    items: readonly NotificationItem[],
    { hasMore, mark, view = VIEWS.inbox }: { hasMore: boolean; mark?: number; view?: ViewFilter },
  ): void {
    const key = viewKey(view);
    const since = mark ?? this.pageMarks.get(key) ?? -1;
    for (const item of items.map(normalized)) {
      const removed = this.removed.get(item.id);
      if (removed && (removed.deleted || removed.at > since)) continue;
      if ((this.touched.get(item.id) ?? -1) > since) continue;
      this.removed.delete(item.id);
      this.hear(item.id, item, 'page');
    }
    const oldest = oldestOf(items);
    if (key === INBOX_KEY) {
      this.paged = true;
      this.known = true;
      this.moveInboxFloor(hasMore ? oldest : 'end');
      this.publish({ hasMore, isLoadingMore: false, loadError: null });
      return;
    }
    const previous = this.floors.get(key) ?? null;
    const floor = deeper(previous, hasMore ? oldest : 'end');
    if (floor !== null && floor !== previous) {
      this.floors.set(key, floor);
      this.floorMoves += 1;
    }
    this.publish({
      views: this.withPaging(key, { hasMore, isLoadingMore: false, loadError: null }),
    });
  }

  /** Older inbox items may exist again (a gap opened below a new snapshot). */
  reopenPages(): void {
    if (!this.state.hasMore) this.update({ hasMore: true });
  }

  loadMoreFailed(error: unknown, view: ViewFilter = VIEWS.inbox): void {
    const key = viewKey(view);
    if (key === INBOX_KEY) this.update({ isLoadingMore: false, loadError: error });
    else this.update({ views: this.withPaging(key, { isLoadingMore: false, loadError: error }) });
  }

  /**
   * Show items read at once (`'all'`: every held inbox item, and a badge of 0) while the REST
   * call runs; settle the returned read with the call's outcome.
   */
  markReadLocally(ids: readonly string[] | 'all'): OptimisticRead {
    const change = { is_read: true, is_seen: true };
    return ids === 'all'
      ? this.changeAllLocally({ archived: false }, change)
      : this.changeLocally(ids, change);
  }

  /**
   * Show `change` on these items at once while the REST call runs; settle the returned
   * change with the call's outcome. A roll back undoes it on the items no server word reached
   * meanwhile (a newer event, a snapshot that shows it done), and the counts never come from a
   * copy taken before the call: they are the server's, with the changes still pending.
   */
  changeLocally(ids: readonly string[], change: ItemChange): OptimisticChange {
    const held = ids.filter((id) => this.has(id));
    // An item not held may move any count: only the server can say.
    const unknown = held.length < ids.length;
    return this.begin(held, change, { bulk: false, zeroing: null, movesAnyCount: unknown });
  }

  /**
   * A bulk call's change, shown at once on every held item it acts on (`scope`). While it
   * runs, the part of the counts it empties (the unread and unseen items of its types, for
   * read-all and archive-all) counts only what is held and shows unread or unseen.
   */
  changeAllLocally(scope: BulkScope, change: ItemChange): OptimisticChange {
    const upTo = scope.upTo === undefined ? undefined : this.serverCopy(scope.upTo);
    const filter: BulkFilter = {
      archived: scope.archived,
      types: scope.types ? [...scope.types] : null,
      is_read: scope.isRead ?? null,
      up_to: upTo ?? null,
    };
    const targets = [...this.state.notificationsById.values()]
      .filter((item) => inBulk(item, filter))
      .map((item) => item.id);
    // It changes items not held too: any count may move.
    const zeroing = zeroingOf(scope, change);
    return this.begin(targets, change, { bulk: true, zeroing, movesAnyCount: true });
  }

  /**
   * Ask the server for the unread count (REST), for when no socket count will settle the
   * badge. A socket count that arrives meanwhile wins: socket counts come in order and each
   * later change sends another, while nothing would correct a REST answer that is older.
   */
  async refreshUnreadCount(fetchCount: () => Promise<number>): Promise<void> {
    const socketCountsBefore = this.socketCounts;
    const count = await fetchCount();
    if (this.socketCounts !== socketCountsBefore || !isCount(count)) return;
    this.applyUnreadCount(count);
  }

  /** The same for every count (`GET /counts`): each part the socket did not overtake. */
  async refreshCounts(fetchCounts: () => Promise<Counts>): Promise<void> {
    const unreadBefore = this.socketCounts;
    const countsBefore = this.socketCountsObjects;
    const counts = await fetchCounts();
    if (!isCount(counts?.unread)) return;
    if (this.socketCountsObjects === countsBefore) this.applyCounts(counts);
    if (this.socketCounts === unreadBefore) this.applyUnreadCount(counts.unread);
  }

  // --- what the server says ---

  private applyUnreadCount(count: number): void {
    this.serverUnread = count;
    if (count === 0) this.everythingRead();
    for (const action of this.pending) {
      action.unreadArrived = true;
      // The server answered before this count was sent, so it includes the change.
      if (action.committed) {
        action.unreadSettled = true;
        // No per-type counts come on this socket: this count is all there is to wait for.
        if (this.socketCountsObjects === 0) action.countsSettled = true;
      }
    }
    for (const [id, tracked] of this.tracked) tracked.countedUnread = this.countedCopy(id, tracked);
    this.endSettledActions();
    this.forgetSettled();
    this.publish();
  }

  private applyCounts(counts: Counts): void {
    this.serverCounts = completeCounts(counts);
    for (const action of this.pending) {
      action.countsArrived = true;
      if (action.committed) action.countsSettled = true;
    }
    for (const [id, tracked] of this.tracked) tracked.countedCounts = this.countedCopy(id, tracked);
    this.endSettledActions();
    this.forgetSettled();
    this.publish();
  }

  /**
   * A count of 0: no inbox item is unread (the guide's mark-all-read sends only this count).
   * Pending changes to unread stand: the server has not applied them yet.
   */
  private everythingRead(): void {
    for (const id of this.heldIds()) {
      const copy = this.serverCopy(id);
      if (copy && !copy.is_archived && !copy.is_read)
        this.hear(id, { ...copy, is_read: true, is_seen: true }, 'socket');
    }
    for (const action of this.pending) action.zeroing = null;
  }

  /** The changes the socket told whose counts did not follow: no count changed. */
  private settleFrame(): void {
    for (const tracked of this.tracked.values()) {
      if (!tracked.settleAtFrame) continue;
      tracked.settleAtFrame = false;
      tracked.countedUnread = tracked.server;
      tracked.countedCounts = tracked.server;
    }
    this.forgetSettled();
  }

  private snapshot(items: readonly NotificationItem[]): void {
    const at = ++this.heard;
    const shown = new Set<string>();
    for (const item of items) {
      if (this.removed.get(item.id)?.deleted) continue;
      shown.add(item.id);
      this.removed.delete(item.id);
      this.touched.set(item.id, at);
      this.hear(item.id, item, 'socket');
    }
    this.dropWhatLeftTheInbox(items, shown);
    this.moveInboxFloor(oldestOf(items));
    this.known = true;
    if (this.paged) {
      this.publish();
      return;
    }
    const draft = this.draft ?? this.state.notificationsById;
    const inboxHeld = [...draft.values()].some((item) => !item.is_archived);
    this.publish({ hasMore: inboxHeld });
  }

  /**
   * The snapshot is the inbox's newest items: a held inbox item newer than its oldest (any,
   * when it holds fewer than a full snapshot) that it does not show was archived or deleted
   * meanwhile, an event the socket could not send (it was reconnecting).
   */
  private dropWhatLeftTheInbox(items: readonly NotificationItem[], shown: Set<string>): void {
    const oldest = oldestOf(items);
    const floor = items.length >= this.snapshotSize && oldest ? sortKey(oldest) : null;
    for (const id of this.heldIds()) {
      const copy = this.serverCopy(id);
      if (!copy || copy.is_archived || shown.has(id)) continue;
      if (floor && newestFirst(sortKey(copy), floor) >= 0) continue; // below the snapshot
      this.hear(id, null, 'socket');
      this.remember(id, false);
    }
  }

  private created(item: NotificationItem): void {
    // A duplicate of a creation whose item has gone since.
    if (this.removed.has(item.id)) return;
    this.touched.set(item.id, ++this.heard);
    const held = this.serverCopy(item.id);
    // An item is created once: a copy of a held one is a duplicate, older than its state.
    const copy = held
      ? { ...item, is_read: held.is_read, is_seen: held.is_seen, is_archived: held.is_archived }
      : item;
    this.hear(item.id, copy, 'socket');
  }

  private updated(item: NotificationItem): void {
    if (this.removed.get(item.id)?.deleted) return;
    this.removed.delete(item.id); // back in the inbox, if it had left it
    this.touched.set(item.id, ++this.heard);
    this.hear(item.id, item, 'socket');
  }

  /** A bulk change: every held item it matches changes, as the server changed them. */
  private changed(change: BulkChange, filter: BulkFilter): void {
    this.heard += 1;
    for (const id of this.heldIds()) {
      const copy = this.serverCopy(id);
      if (!copy || !inBulk(copy, filter)) continue;
      this.touched.set(id, this.heard);
      if ('deleted' in change) {
        this.hear(id, null, 'socket');
        this.remember(id, true);
      } else {
        this.hear(id, { ...copy, ...change }, 'socket');
      }
    }
  }

  /**
   * What the server says item `id` is now (`null`: gone). An item nobody changed here shows
   * it; one with changes pending shows it with them, and no roll back undoes a claim it
   * confirms.
   */
  private hear(id: string, copy: NotificationItem | null, source: Source): void {
    const tracked = this.tracked.get(id);
    if (!tracked) {
      this.show(id, copy);
      return;
    }
    tracked.server = copy;
    if (source !== 'page') tracked.settleAtFrame = true;
    // A copy that shows a claim done confirms it: later words of the server are the truth.
    // One that does not predates the call's commit (the field is a yes or no: the server's
    // only change to it is the one claimed), and the claim stands.
    for (const action of this.pending) {
      if (copy === null || satisfies(copy, action.change)) action.open.delete(id);
    }
    this.show(id, this.overlaid(id, tracked.server));
  }

  private remember(id: string, deleted: boolean): void {
    this.touched.delete(id);
    this.removed.delete(id);
    this.removed.set(id, { deleted, at: this.heard });
    if (this.removed.size <= REMOVED_MEMORY) return;
    const oldest = this.removed.keys().next().value;
    if (oldest !== undefined) this.removed.delete(oldest);
  }

  // --- optimistic changes ---

  private begin(
    targets: readonly string[],
    change: ItemChange,
    { bulk, zeroing, movesAnyCount }: Pick<Action, 'bulk' | 'zeroing'> & { movesAnyCount: boolean },
  ): OptimisticChange {
    let needsUnread = movesAnyCount;
    let needsCounts = movesAnyCount;
    const open = new Set<string>();
    for (const id of targets) {
      const shown = this.state.notificationsById.get(id);
      const server = this.serverCopy(id);
      // Shown so already, and so on the server: nothing to claim. Shown so by another pending
      // call only: this one claims it too, so that the other's failure does not undo it.
      if (!shown || !server || (satisfies(shown, change) && satisfies(server, change))) continue;
      const after = applied(server, change);
      needsUnread ||= unreadIn(server) !== unreadIn(after);
      needsCounts ||= unreadIn(server) !== unreadIn(after) || unseenIn(server) !== unseenIn(after);
      this.track(id);
      open.add(id);
    }
    const action: Action = {
      change,
      open,
      bulk,
      zeroing,
      needsUnread,
      needsCounts,
      unreadArrived: false,
      countsArrived: false,
      committed: false,
      unreadSettled: !needsUnread,
      countsSettled: !needsCounts,
    };
    this.pending.add(action);
    for (const id of open) this.show(id, this.overlaid(id, this.serverCopy(id)));
    this.publish();
    return { commit: () => this.commit(action), rollBack: () => this.rollBack(action) };
  }

  private commit(action: Action): boolean {
    if (!this.pending.has(action)) return false;
    action.committed = true;
    // Its events reached the socket before the answer (their counts follow them), or it
    // moves no count: done.
    if ((!action.bulk && action.open.size === 0) || (!action.needsUnread && !action.needsCounts)) {
      this.end(action, false);
      this.forgetSettled();
      this.publish();
      return false;
    }
    this.publish();
    // The answer beat its events to the tab: ask for the counts rather than wait for ones
    // that may never come (nothing changed on the server, the item was so already).
    return true;
  }

  private rollBack(action: Action): boolean {
    if (!this.pending.delete(action)) return false;
    for (const id of action.open) this.show(id, this.overlaid(id, this.serverCopy(id)));
    action.open.clear();
    this.forgetSettled();
    this.publish();
    // Without a count since the call began, the server may have applied it all the same
    // (a proxy's 504): the counts cannot tell, only the server can.
    return (
      (action.needsUnread && !action.unreadArrived) ||
      (action.needsCounts && this.socketCountsObjects > 0 && !action.countsArrived)
    );
  }

  private endSettledActions(): void {
    for (const action of this.pending) {
      if (action.committed && action.unreadSettled && action.countsSettled) this.end(action, true);
    }
  }

  /**
   * A committed call: its claims are the server's state now. `counted`: a count that includes
   * it arrived; otherwise the next one will.
   */
  private end(action: Action, counted: boolean): void {
    this.pending.delete(action);
    for (const id of action.open) {
      const tracked = this.tracked.get(id);
      if (!tracked?.server) continue;
      tracked.server = applied(tracked.server, action.change);
      if (counted) {
        tracked.countedUnread = tracked.server;
        tracked.countedCounts = tracked.server;
      }
      if (action.change.deleted) this.remember(id, true);
      this.show(id, this.overlaid(id, tracked.server));
    }
    action.open.clear();
  }

  private track(id: string): void {
    if (this.tracked.has(id)) return;
    const copy = this.state.notificationsById.get(id) ?? null;
    this.tracked.set(id, {
      server: copy,
      countedUnread: copy,
      countedCounts: copy,
      settleAtFrame: false,
    });
  }

  /** Items with no claim left whose change the counts include: back to plain items. */
  private forgetSettled(): void {
    for (const [id, tracked] of this.tracked) {
      if (this.claimed(id)) continue;
      if (!sameCount(tracked.countedUnread, tracked.server, unreadIn)) continue;
      if (!sameCount(tracked.countedCounts, tracked.server, unreadIn)) continue;
      if (!sameCount(tracked.countedCounts, tracked.server, unseenIn)) continue;
      this.tracked.delete(id);
    }
  }

  private claimed(id: string): boolean {
    for (const action of this.pending) if (action.open.has(id)) return true;
    return false;
  }

  /** `server` with the claims still standing on `id`, in the order they were made. */
  private overlaid(id: string, server: NotificationItem | null): NotificationItem | null {
    let shown = server;
    for (const action of this.pending) {
      if (action.open.has(id)) shown = applied(shown, action.change);
    }
    return shown;
  }

  /** What a count that arrives now includes: the server's copy, and the committed calls. */
  private countedCopy(id: string, tracked: Tracked): NotificationItem | null {
    let counted = tracked.server;
    for (const action of this.pending) {
      if (action.committed && action.open.has(id)) counted = applied(counted, action.change);
    }
    return counted;
  }

  private serverCopy(id: string): NotificationItem | null {
    const tracked = this.tracked.get(id);
    if (tracked) return tracked.server;
    return (this.draft ?? this.state.notificationsById).get(id) ?? null;
  }

  /** Every id held, those a pending delete hides too. */
  private heldIds(): string[] {
    const ids = new Set((this.draft ?? this.state.notificationsById).keys());
    for (const [id, tracked] of this.tracked) if (tracked.server) ids.add(id);
    return [...ids];
  }

  // --- the next state ---

  private show(id: string, copy: NotificationItem | null): void {
    const current = (this.draft ?? this.state.notificationsById).get(id);
    if (copy === null ? current === undefined : current !== undefined && sameItem(current, copy))
      return;
    this.draft ??= new Map(this.state.notificationsById);
    if (copy === null) this.draft.delete(id);
    else this.draft.set(id, copy);
  }

  /** Make the items, the order and the counts follow what changed. */
  private publish(change: Partial<NotificationState> = {}): void {
    const notificationsById = this.draft ?? this.state.notificationsById;
    const orderedIds = this.draft ? sortNewestFirst(notificationsById) : this.state.orderedIds;
    this.draft = null;
    const { unreadCount, counts } = this.displayedCounts(notificationsById);
    this.update({ notificationsById, orderedIds, unreadCount, counts, ...change });
  }

  /** The server's counts, with the differences of the changes they do not include yet. */
  private displayedCounts(byId: ReadonlyMap<string, NotificationItem>): {
    unreadCount: number;
    counts: Counts | null;
  } {
    const actions = [...this.pending];
    const held = actions.some((action) => action.zeroing) ? heldCounts(byId) : null;
    const zeroed = (type: NotificationType, kind: 'unread' | 'unseen', counts: boolean) =>
      actions.some(
        ({ zeroing, unreadSettled, countsSettled }) =>
          zeroing?.[kind] === true &&
          !(counts ? countsSettled : unreadSettled) &&
          (zeroing.types === null || zeroing.types.has(type)),
      );
    const server = this.serverCounts;
    const deltas = this.trackedDeltas(byId);

    let unread = this.serverUnread;
    if (held && allZeroed(actions)) {
      // Every unread item is read on the server once it is done: what shows unread arrived since.
      unread = NOTIFICATION_TYPES.reduce((sum, type) => sum + held[type].unread, 0);
    } else {
      for (const type of NOTIFICATION_TYPES) {
        // A part emptied counts its held items; without per-type counts its share is not
        // known, and the deltas of its held items stand for it.
        if (held && server && zeroed(type, 'unread', false)) {
          unread += held[type].unread - server.by_type[type].unread;
        } else {
          unread += deltas.get(type)?.unread ?? 0;
        }
      }
    }
    const unreadCount = Math.max(0, unread);
    if (!server) return { unreadCount, counts: null };

    const byType = {} as Record<NotificationType, TypeCounts>;
    let unseen = server.unseen;
    for (const type of NOTIFICATION_TYPES) {
      const own = server.by_type[type];
      const delta = deltas.get(type);
      const typeUnread =
        held && zeroed(type, 'unread', true)
          ? held[type].unread
          : own.unread + (delta?.counted ?? 0);
      const typeUnseen =
        held && zeroed(type, 'unseen', true)
          ? held[type].unseen
          : own.unseen + (delta?.unseen ?? 0);
      byType[type] = { unread: Math.max(0, typeUnread), unseen: Math.max(0, typeUnseen) };
      unseen += byType[type].unseen - own.unseen;
    }
    const counts = { unread: unreadCount, unseen: Math.max(0, unseen), by_type: byType };
    return { unreadCount, counts: sameCounts(this.state.counts, counts) ?? counts };
  }

  /** Per type, what the tracked items add to the counts they are counted in. */
  private trackedDeltas(byId: ReadonlyMap<string, NotificationItem>) {
    const deltas = new Map<NotificationType, { unread: number; counted: number; unseen: number }>();
    for (const [id, tracked] of this.tracked) {
      const shown = byId.get(id) ?? null;
      const type = (shown ?? tracked.server ?? tracked.countedUnread ?? tracked.countedCounts)
        ?.type;
      if (!type) continue;
      const delta = deltas.get(type) ?? { unread: 0, counted: 0, unseen: 0 };
      delta.unread += Number(unreadIn(shown)) - Number(unreadIn(tracked.countedUnread));
      delta.counted += Number(unreadIn(shown)) - Number(unreadIn(tracked.countedCounts));
      delta.unseen += Number(unseenIn(shown)) - Number(unseenIn(tracked.countedCounts));
      deltas.set(type, delta);
    }
    return deltas;
  }

  private moveInboxFloor(to: NotificationItem | 'end' | undefined): void {
    const floor = deeper(this.inboxFloor, to);
    if (floor === this.inboxFloor) return;
    this.inboxFloor = floor;
    this.floorMoves += 1;
  }

  private floorOf(key: string, filter: ViewFilter): SortKey | null {
    const inbox = this.inboxFloor === 'end' ? null : this.inboxFloor;
    if (key === INBOX_KEY) return inbox;
    const own = this.floors.get(key);
    if (own === 'end') return null;
    if (!withinInbox(filter)) return own ?? null;
    // A view of the inbox holds what the inbox holds, and what its own pages brought.
    if (own === undefined || inbox === null) return inbox;
    return newestFirst(own, inbox) > 0 ? own : inbox;
  }

  private pagingOf(key: string, filter: ViewFilter): ViewPaging {
    const { hasMore, isLoadingMore, loadError } = this.state;
    if (key === INBOX_KEY) return { hasMore, isLoadingMore, loadError };
    const paging = this.state.views.get(key) ?? EMPTY_PAGING;
    // Every inbox item is held: so is every item of a view of it.
    if (withinInbox(filter) && this.inboxFloor === 'end') return { ...paging, hasMore: false };
    return paging;
  }

  private withPaging(key: string, change: Partial<ViewPaging>): ReadonlyMap<string, ViewPaging> {
    const views = new Map(this.state.views);
    views.set(key, { ...(views.get(key) ?? EMPTY_PAGING), ...change });
    return views;
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

/** The items of `state`, newest first: every held item, of every view. */
export function itemsOf(
  state: Pick<NotificationState, 'notificationsById' | 'orderedIds'>,
): NotificationItem[] {
  const { notificationsById, orderedIds } = state;
  return orderedIds.map((id) => notificationsById.get(id)).filter(isItem);
}

function isItem(item: NotificationItem | undefined): item is NotificationItem {
  return item !== undefined;
}

/**
 * An item as the store keeps it. A server older than the lifecycle states sends neither
 * `is_seen` nor `is_archived`: in the inbox, seen when read.
 */
function normalized(item: NotificationItem): NotificationItem {
  const { is_seen, is_archived } = item as Partial<NotificationItem>;
  if (
    typeof is_archived === 'boolean' &&
    (is_seen === true || (is_seen === false && !item.is_read))
  )
    return item;
  return { ...item, is_seen: is_seen === true || item.is_read, is_archived: is_archived === true };
}

/** `item` as `change` makes it; `null` once deleted. */
function applied(item: NotificationItem | null, change: ItemChange): NotificationItem | null {
  return item === null || change.deleted ? null : withChange(item, change);
}

function withChange(item: NotificationItem, change: ItemChange): NotificationItem {
  const changed = { ...item };
  if (change.is_read !== undefined) changed.is_read = change.is_read;
  if (change.is_seen !== undefined) changed.is_seen = change.is_seen;
  if (change.is_archived !== undefined) changed.is_archived = change.is_archived;
  if (changed.is_read) changed.is_seen = true; // a read item is always seen
  return changed;
}

/** `item` is already as `change` makes it. */
function satisfies(item: NotificationItem, change: ItemChange): boolean {
  if (change.deleted) return false;
  return (['is_read', 'is_seen', 'is_archived'] as const).every(
    (field) => change[field] === undefined || item[field] === change[field],
  );
}

function inBulk(item: NotificationItem, filter: BulkFilter): boolean {
  return (
    item.is_archived === filter.archived &&
    (filter.types === null || filter.types.includes(item.type)) &&
    (filter.is_read === null || item.is_read === filter.is_read) &&
    (filter.up_to === null || newestFirst(sortKey(item), sortKey(filter.up_to)) >= 0)
  );
}

/** The part of the counts a bulk call empties: what leaves the inbox or stops being unread. */
function zeroingOf(scope: BulkScope, change: ItemChange): Action['zeroing'] {
  if (scope.archived || scope.isRead === true) return null; // the counts are the inbox's unread
  const types = scope.types ? new Set(scope.types) : null;
  if (change.deleted || change.is_archived === true || change.is_read === true)
    return { types, unread: true, unseen: true }; // an unseen item is unread
  if (change.is_seen === true) return { types, unread: false, unseen: true };
  return null;
}

function allZeroed(actions: readonly Action[]): boolean {
  return actions.some(
    ({ zeroing, unreadSettled }) => zeroing?.unread && zeroing.types === null && !unreadSettled,
  );
}

function unreadIn(item: NotificationItem | null): boolean {
  return item !== null && !item.is_archived && !item.is_read;
}

function unseenIn(item: NotificationItem | null): boolean {
  return item !== null && !item.is_archived && !item.is_seen;
}

function sameCount(
  a: NotificationItem | null,
  b: NotificationItem | null,
  counted: (item: NotificationItem | null) => boolean,
): boolean {
  return counted(a) === counted(b);
}

/** The held inbox items that show unread and unseen, per type. */
function heldCounts(byId: ReadonlyMap<string, NotificationItem>) {
  const counts = Object.fromEntries(
    NOTIFICATION_TYPES.map((type) => [type, { unread: 0, unseen: 0 }]),
  ) as Record<NotificationType, TypeCounts>;
  for (const item of byId.values()) {
    const own = counts[item.type];
    if (!own) continue;
    if (unreadIn(item)) own.unread += 1;
    if (unseenIn(item)) own.unseen += 1;
  }
  return counts;
}

/** Counts with every type, as the server sends them (a missing type counts none). */
function completeCounts(counts: Counts): Counts {
  const byType = {} as Record<NotificationType, TypeCounts>;
  for (const type of NOTIFICATION_TYPES) {
    const own = counts.by_type?.[type];
    byType[type] = { unread: own?.unread ?? 0, unseen: own?.unseen ?? 0 };
  }
  return { unread: counts.unread, unseen: counts.unseen, by_type: byType };
}

/** `previous` when it says the same as `next`: the state keeps its counts object. */
function sameCounts(previous: Counts | null, next: Counts): Counts | null {
  if (!previous || previous.unread !== next.unread || previous.unseen !== next.unseen) return null;
  for (const type of NOTIFICATION_TYPES) {
    const [a, b] = [previous.by_type[type], next.by_type[type]];
    if (a.unread !== b.unread || a.unseen !== b.unseen) return null;
  }
  return previous;
}

function sameItem(a: NotificationItem, b: NotificationItem): boolean {
  return (
    a === b ||
    (a.id === b.id &&
      a.message === b.message &&
      a.type === b.type &&
      a.link_url === b.link_url &&
      a.is_read === b.is_read &&
      a.is_seen === b.is_seen &&
      a.is_archived === b.is_archived &&
      a.created_at === b.created_at)
  );
}

function isCount(count: unknown): count is number {
  return Number.isInteger(count) && (count as number) >= 0;
}

/** A floor moved down to `to` (an item, or the end), never up; `undefined` leaves it. */
function deeper(
  floor: SortKey | 'end' | null,
  to: NotificationItem | 'end' | undefined,
): SortKey | 'end' | null {
  if (to === undefined || floor === 'end') return floor;
  if (to === 'end') return 'end';
  const key = sortKey(to);
  return floor === null || newestFirst(key, floor) > 0 ? key : floor;
}

/** The oldest of `items` in the server's order (its lists end with it). */
function oldestOf(items: readonly NotificationItem[]): NotificationItem | undefined {
  let oldest: NotificationItem | undefined;
  for (const item of items) {
    if (!oldest || newestFirst(sortKey(item), sortKey(oldest)) > 0) oldest = item;
  }
  return oldest;
}

function sortNewestFirst(byId: ReadonlyMap<string, NotificationItem>): string[] {
  const keyed = [...byId.values()].map(sortKey);
  keyed.sort(newestFirst);
  return keyed.map((key) => key.id);
}
