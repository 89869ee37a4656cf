/** The wire format of Campana's socket and REST calls (docs/protocol.md). */

export type NotificationType =
  | 'GENERIC_INFO'
  | 'TEMPLATE_APPROVED'
  | 'TEMPLATE_REJECTED'
  | 'CAMPAIGN_SCHEDULED'
  | 'CAMPAIGN_SENDING'
  | 'CAMPAIGN_COMPLETED'
  | 'CAMPAIGN_ERROR';

export interface NotificationItem {
  id: string;
  message: string;
  type: NotificationType;
  link_url: string | null;
  is_read: boolean;
  /**
   * The user has had it in front of them (the bell was opened). A read item is always seen:
   * marking read marks seen too, marking unread keeps it seen.
   */
  is_seen: boolean;
  /** Out of the inbox, in the archived view. */
  is_archived: boolean;
  /** ISO-8601 with zone, e.g. `2026-11-28T07:00:00.123456Z`. */
  created_at: string;
}

/** One type's share of the inbox's counts. */
export interface TypeCounts {
  unread: number;
  unseen: number;
}

/**
 * The inbox's counts (archived items are not in them), as `counts.updated` and
 * `GET /api/v1/notifications/counts` give them; every type is always present.
 */
export interface Counts {
  /** Equals the unread badge (`unread_count.updated`) at the same moment. */
  unread: number;
  unseen: number;
  by_type: Record<NotificationType, TypeCounts>;
}

/** What a bulk change did (`notifications.changed`): read-all, seen-all, (un)archive-all, delete-all. */
export type BulkChange =
  | { is_read: true; is_seen: true }
  | { is_seen: true }
  | { is_archived: boolean }
  | { deleted: true };

/** Which items a bulk change acted on. */
export interface BulkFilter {
  /** The view it acted on: the archived view (true) or the inbox (false). */
  archived: boolean;
  /** `null`: every type. */
  types: NotificationType[] | null;
  /** `null`: read and unread. */
  is_read: boolean | null;
  /** Only items at or older than this one (created_at, then id); `null`: every item. */
  up_to: { id: string; created_at: string } | null;
}

export type ServerEvent =
  | { event: 'snapshot'; payload: NotificationItem[] }
  | { event: 'notification.created'; payload: NotificationItem }
  | { event: 'notification.read'; payload: { id: string; is_read: true } }
  | { event: 'notification.updated'; payload: NotificationItem }
  | { event: 'notification.deleted'; payload: { id: string } }
  | { event: 'notifications.changed'; payload: { change: BulkChange; filter: BulkFilter } }
  | { event: 'unread_count.updated'; payload: { count: number } }
  /** Only on a socket opened with `&counts=1`. */
  | { event: 'counts.updated'; payload: Counts }
  | { event: 'keepalive'; payload: Record<string, never> };

/**
 * Returns the user's JWT, or `null` when nobody is signed in (throwing `SignedOutError` says
 * the same). `refresh: true` means a new token is needed: the last one was refused (a socket
 * closed with 4401, a REST call answered 401) or is about to expire, so fetch one rather than
 * return a cached one. Any other error (network, 5xx, timeout) is retried with backoff.
 */
export type GetToken = (options: { refresh: boolean }) => Promise<string | null> | string | null;

/**
 * Where the connection stands; the package README has a table of what to show for each.
 *
 * `idle`: not started yet (server render, before the effect), or let go while every tab of
 * the browser is hidden (`SharedSocket`). `connecting`: getting a token, opening, waiting for
 * the snapshot. `open`: live. `reconnecting`: the connection was lost, or no token could be
 * fetched; retrying with backoff. `offline`: the same while the browser says it is offline;
 * retries at once when it is back online. `stopped`: the server closed this tab's socket
 * because the user has too many (4429); a visible tab or an online event tries again.
 * `forbidden`: the server refused the page's `Origin` (4403): add it to
 * `CAMPANA_ALLOWED_ORIGINS`; nothing reconnects until `retryNow()`. `unauthorized`: signed
 * out (`getToken` said so, or the server refused a token it had just fetched fresh); nothing
 * reconnects until `retryNow()`. `closed`: `close()` was called.
 */
export type ConnectionState =
  | 'idle'
  | 'connecting'
  | 'open'
  | 'reconnecting'
  | 'offline'
  | 'stopped'
  | 'forbidden'
  | 'unauthorized'
  | 'closed';
