import type { NotificationItem, NotificationType } from './types.js';

/**
 * A view of the feed: which of the user's items it shows. Every view is derived from the one
 * store by this filter, and pages on its own (`NotificationCenter.loadMore(view)`).
 */
export interface ViewFilter {
  /** The archived view (`true`) or the inbox (`false`, the default). */
  archived?: boolean;
  /** Only items of these types (a category); every type when absent. */
  types?: readonly NotificationType[];
  /** Only unread (`false`) or read (`true`) items. */
  isRead?: boolean;
  /** Only unseen (`false`) or seen (`true`) items. */
  isSeen?: boolean;
}

/** The views most feeds need; `ofTypes` makes a category. */
export const VIEWS = Object.freeze({
  inbox: Object.freeze({}) as ViewFilter,
  unread: Object.freeze({ isRead: false }) as ViewFilter,
  unseen: Object.freeze({ isSeen: false }) as ViewFilter,
  archived: Object.freeze({ archived: true }) as ViewFilter,
});

/** The items of these types, in the inbox (or in `base`: e.g. `VIEWS.archived`). */
export function ofTypes(
  types: readonly NotificationType[],
  base: ViewFilter = VIEWS.inbox,
): ViewFilter {
  return { ...base, types };
}

/** One string per view, whatever the order of its types: two equal filters, one key. */
export function viewKey(view: ViewFilter): string {
  const types = view.types ? [...new Set(view.types)].sort().join(',') : '*';
  return `archived=${view.archived === true};types=${types};read=${view.isRead ?? '*'};seen=${view.isSeen ?? '*'}`;
}

export const INBOX_KEY = viewKey(VIEWS.inbox);

export function inView(item: NotificationItem, view: ViewFilter): boolean {
  return (
    item.is_archived === (view.archived === true) &&
    (view.types === undefined || view.types.includes(item.type)) &&
    (view.isRead === undefined || item.is_read === view.isRead) &&
    (view.isSeen === undefined || item.is_seen === view.isSeen)
  );
}

/** A view of the inbox: the snapshot and the inbox's pages fill it too. */
export function withinInbox(view: ViewFilter): boolean {
  return view.archived !== true;
}

/** Where an item stands in the server's order: `created_at` to the microsecond, then `id`. */
export interface SortKey {
  readonly ms: number;
  readonly micros: number;
  readonly id: string;
}

export function sortKey(item: Pick<NotificationItem, 'id' | 'created_at'>): SortKey {
  const micros = /\.(\d+)/.exec(item.created_at)?.[1] ?? '';
  return {
    ms: Date.parse(item.created_at),
    micros: Number(micros.padEnd(6, '0').slice(3, 6)),
    id: item.id,
  };
}

/** Negative when `a` is newer than `b` (comes first, as in the server's lists). */
export function newestFirst(a: SortKey, b: SortKey): number {
  return b.ms - a.ms || b.micros - a.micros || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}
