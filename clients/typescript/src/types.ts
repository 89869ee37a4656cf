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
  /** ISO-8601 with zone, e.g. `2026-11-28T07:00:00.123456Z`. */
  created_at: string;
}

export type ServerEvent =
  | { event: 'snapshot'; payload: NotificationItem[] }
  | { event: 'notification.created'; payload: NotificationItem }
  | { event: 'notification.read'; payload: { id: string; is_read: true } }
  | { event: 'unread_count.updated'; payload: { count: number } }
  | { event: 'keepalive'; payload: Record<string, never> };

/**
 * Returns the user's JWT. `refresh: true` means the last one was refused (a socket closed
 * with 4401, a REST call answered 401): fetch a new one rather than a cached one.
 */
export type GetToken = (options: { refresh: boolean }) => Promise<string> | string;

/**
 * `connecting`: opening, no snapshot yet. `open`: snapshot received, live.
 * `reconnecting`: waiting to retry (after a close, a silent socket or going offline).
 * `stopped`: the server refused us for good (4403) or closed the oldest tab (4429); a
 * visible tab or an online event tries again. `unauthorized`: a freshly fetched token was
 * refused, or `getToken` threw; nothing reconnects until `retryNow()`.
 * `closed`: `close()` was called.
 */
export type ConnectionState =
  'idle' | 'connecting' | 'open' | 'reconnecting' | 'stopped' | 'unauthorized' | 'closed';
