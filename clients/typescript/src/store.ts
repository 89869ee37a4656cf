import type { ConnectionState, NotificationItem, ServerEvent } from './types.js';

export interface NotificationState {
  readonly notificationsById: ReadonlyMap<string, NotificationItem>;
  /** Newest first: `created_at` descending, then `id` descending, like the server. */
  readonly orderedIds: readonly string[];
  readonly unreadCount: number;
  readonly connection: ConnectionState;
}

export type Listener = () => void;

const EMPTY: NotificationState = {
  notificationsById: new Map(),
  orderedIds: [],
  unreadCount: 0,
  connection: 'idle',
};

/**
 * The notification list and badge, framework-free. Every event applies idempotently: items
 * are keyed by id, a snapshot merges into what is held, and `unread_count.updated` is the
 * truth for the badge. Each change makes a new state object (for `useSyncExternalStore`).
 */
export class NotificationStore {
  private state: NotificationState = EMPTY;
  private readonly listeners = new Set<Listener>();

  getState = (): NotificationState => this.state;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** The held items, newest first. */
  items(): NotificationItem[] {
    const { notificationsById, orderedIds } = this.state;
    return orderedIds.map((id) => notificationsById.get(id)).filter(isItem);
  }

  apply(event: ServerEvent): void {
    switch (event.event) {
      case 'snapshot':
        this.upsert(event.payload);
        return;
      case 'notification.created':
        this.upsert([event.payload]);
        return;
      case 'notification.read':
        this.setRead([event.payload.id]);
        return;
      case 'unread_count.updated':
        // "Mark all read" sends only this count; at 0 nothing held can still be unread.
        if (event.payload.count === 0) this.setRead([...this.state.notificationsById.keys()]);
        this.update({ unreadCount: event.payload.count });
        return;
      default:
        return;
    }
  }

  setConnection(connection: ConnectionState): void {
    this.update({ connection });
  }

  /** Add or replace items (from a snapshot, an event or a REST page). */
  upsert(items: readonly NotificationItem[]): void {
    if (items.length === 0) return;
    const byId = new Map(this.state.notificationsById);
    for (const item of items) byId.set(item.id, item);
    this.update({ notificationsById: byId, orderedIds: sortNewestFirst(byId) });
  }

  /**
   * Mark items read locally, lowering the badge by those that were unread. Returns the
   * undo, for an optimistic update whose REST call fails.
   */
  markReadLocally(ids: readonly string[] | 'all'): () => void {
    const before = this.state;
    const targets = ids === 'all' ? [...before.notificationsById.keys()] : ids;
    const wereUnread = targets.filter((id) => before.notificationsById.get(id)?.is_read === false);
    this.setRead(targets);
    const unreadCount = ids === 'all' ? 0 : Math.max(0, before.unreadCount - wereUnread.length);
    this.update({ unreadCount });
    return () => {
      const byId = new Map(this.state.notificationsById);
      for (const id of wereUnread) {
        const item = byId.get(id);
        if (item) byId.set(id, { ...item, is_read: false });
      }
      this.update({ notificationsById: byId, unreadCount: before.unreadCount });
    };
  }

  private setRead(ids: readonly string[]): void {
    let byId: Map<string, NotificationItem> | null = null;
    for (const id of ids) {
      const item = this.state.notificationsById.get(id);
      if (!item || item.is_read) continue;
      byId ??= new Map(this.state.notificationsById);
      byId.set(id, { ...item, is_read: true });
    }
    if (byId) this.update({ notificationsById: byId });
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

function isItem(item: NotificationItem | undefined): item is NotificationItem {
  return item !== undefined;
}

/** `created_at` to a sortable key: milliseconds, then the microseconds Date drops. */
function timeKey(createdAt: string): [number, number] {
  const micros = /\.(\d+)/.exec(createdAt)?.[1] ?? '';
  return [Date.parse(createdAt), Number(micros.padEnd(6, '0').slice(3, 6))];
}

function sortNewestFirst(byId: ReadonlyMap<string, NotificationItem>): string[] {
  const keyed = [...byId.values()].map((item) => ({ id: item.id, key: timeKey(item.created_at) }));
  keyed.sort((a, b) => b.key[0] - a.key[0] || b.key[1] - a.key[1] || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  return keyed.map((entry) => entry.id);
}
