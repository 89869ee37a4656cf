import { isSignedOut, SignedOutError } from './token.js';
import type { Counts, GetToken, NotificationItem, NotificationType } from './types.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
  ) {
    super(`${status} ${code}: ${detail}`);
    this.name = 'ApiError';
  }
}

export interface ApiOptions {
  baseUrl: string;
  getToken: GetToken;
  fetch?: typeof fetch;
  /**
   * Called when a refreshed token is refused too (401 to the retry), or `getToken` says
   * "signed out" (`null`, `SignedOutError`), before the call rejects with that error: the
   * user is signed out, not offline.
   */
  onUnauthorized?: (error: ApiError | SignedOutError) => void;
}

/** Which page of `GET /api/v1/notifications/` to fetch. */
export interface PageQuery {
  /** The cursor: only items older than this one (a page's `next`). */
  before?: string;
  /** 20 by default; the server accepts 1 to 100. */
  limit?: number;
  isRead?: boolean;
  /** Only unseen (`false`) or seen (`true`) items. */
  isSeen?: boolean;
  /** The archived view (`true`); the inbox by default. */
  archived?: boolean;
  type?: NotificationType;
  /** Items of any of these types (a category); sent as one `type=` each, beside `type`. */
  types?: readonly NotificationType[];
}

/**
 * Which items a bulk call changes; every field is optional. Without `upTo` the server
 * changes every matching item, one that arrives during the call too: `NotificationCenter`
 * sends the newest item it holds.
 */
export interface BulkOptions {
  /** Only items of these types (a category). */
  types?: readonly NotificationType[];
  /** The id of the newest item the user could see: only it and older items change. */
  upTo?: string;
  /** Only read (`true`) or unread (`false`) items. */
  isRead?: boolean;
}

export interface DeleteAllOptions extends BulkOptions {
  /** Empty the archived view (`true`) instead of the inbox. */
  archived?: boolean;
}

/**
 * A bulk call's answer. `done: false` (a 202) means the server carries on with it: counts
 * are pushed as its batches commit, and `notifications.changed` when it is done.
 */
export interface BulkResult {
  /** The unread count after the call (so far, when not done). */
  count: number;
  /** Items changed (so far, when not done). */
  changed: number;
  done: boolean;
}

export interface NotificationPage {
  /** Newest first, like the socket's snapshot. */
  items: NotificationItem[];
  /** The `before` of the next page, from the `Link` header; `null` on the last page. */
  next: string | null;
}

/**
 * The user's REST calls. A 401 gets one retry with a refreshed token. Calls that change
 * something (mark read, archive, delete, the bulk calls…) are sent with `keepalive`, so that
 * a link followed in the same click does not cancel them.
 */
export class NotificationsApi {
  private readonly fetch: typeof fetch;

  constructor(private readonly options: ApiOptions) {
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  list({ skip = 0, limit = 20 } = {}): Promise<NotificationItem[]> {
    return this.request('GET', `/?skip=${skip}&limit=${limit}`);
  }

  /** One page, newest first, and the cursor of the next (keyset: gapless while items arrive). */
  async page(query: PageQuery = {}): Promise<NotificationPage> {
    const response = await this.respond('GET', `/?${pageQuery(query)}`);
    const items = (await response.json()) as NotificationItem[];
    return { items, next: nextCursor(response.headers.get('Link')) };
  }

  async unreadCount(): Promise<number> {
    const body = await this.request<{ count: number }>('GET', '/unread-count');
    return body.count;
  }

  /** The inbox's unread and unseen counts, in all and per type. */
  getCounts(): Promise<Counts> {
    return this.request('GET', '/counts');
  }

  /** Each per-item call answers the item after the change (unchanged if nothing changed). */
  markRead(id: string): Promise<NotificationItem> {
    return this.request('PATCH', `/${encodeURIComponent(id)}/read`);
  }

  markUnread(id: string): Promise<NotificationItem> {
    return this.request('PATCH', `/${encodeURIComponent(id)}/unread`);
  }

  markSeen(id: string): Promise<NotificationItem> {
    return this.request('PATCH', `/${encodeURIComponent(id)}/seen`);
  }

  archive(id: string): Promise<NotificationItem> {
    return this.request('PATCH', `/${encodeURIComponent(id)}/archive`);
  }

  unarchive(id: string): Promise<NotificationItem> {
    return this.request('PATCH', `/${encodeURIComponent(id)}/unarchive`);
  }

  /** Delete for good (the server answers 204). */
  async remove(id: string): Promise<void> {
    await this.respond('DELETE', `/${encodeURIComponent(id)}`);
  }

  /** Every unread item of the inbox (without options, as the guide's call). */
  markAllRead(options: BulkOptions = {}): Promise<BulkResult> {
    return this.request('POST', '/read-all', bulkBody(options));
  }

  markAllSeen(options: BulkOptions = {}): Promise<BulkResult> {
    return this.request('POST', '/seen-all', bulkBody(options));
  }

  /** Out of the inbox; `isRead: true` archives only the read ones. */
  archiveAll(options: BulkOptions = {}): Promise<BulkResult> {
    return this.request('POST', '/archive-all', bulkBody(options));
  }

  /** Back from the archived view into the inbox. */
  unarchiveAll(options: BulkOptions = {}): Promise<BulkResult> {
    return this.request('POST', '/unarchive-all', bulkBody(options));
  }

  /** Empties the inbox, or the archived view with `archived: true`. */
  deleteAll({ archived, ...options }: DeleteAllOptions = {}): Promise<BulkResult> {
    const body = bulkBody(options) ?? {};
    if (archived !== undefined) body.archived = archived;
    return this.request('POST', '/delete-all', Object.keys(body).length > 0 ? body : undefined);
  }

  private async request<T>(method: string, path: string, body?: object): Promise<T> {
    const response = await this.respond(method, path, body);
    return (await response.json()) as T;
  }

  /** The successful response to the call; an `ApiError` otherwise. */
  private async respond(method: string, path: string, body?: object): Promise<Response> {
    const url = `${this.options.baseUrl.replace(/\/$/, '')}/api/v1/notifications${path}`;
    let response = await this.send(method, url, false, body);
    const refreshed = response.status === 401;
    if (refreshed) response = await this.send(method, url, true, body);
    if (!response.ok) {
      const body = (await response.json().catch(() => ({}))) as { error?: string; detail?: string };
      const error = new ApiError(
        response.status,
        body.error ?? 'http_error',
        body.detail ?? response.statusText,
      );
      if (refreshed && response.status === 401) this.options.onUnauthorized?.(error);
      throw error;
    }
    return response;
  }

  private async send(
    method: string,
    url: string,
    refresh: boolean,
    body: object | undefined,
  ): Promise<Response> {
    const token = await this.token(refresh);
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    // keepalive: the request outlives the page, as a read made by clicking a link must.
    return this.fetch(url, {
      method,
      headers,
      keepalive: method !== 'GET',
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
  }

  private async token(refresh: boolean): Promise<string> {
    let token: string | null;
    try {
      token = await this.options.getToken({ refresh });
    } catch (error) {
      if (isSignedOut(error)) this.options.onUnauthorized?.(error as SignedOutError);
      throw error;
    }
    if (token !== null) return token;
    const error = new SignedOutError('getToken returned null');
    this.options.onUnauthorized?.(error);
    throw error;
  }
}

function pageQuery({
  before,
  limit = 20,
  isRead,
  isSeen,
  archived,
  type,
  types = [],
}: PageQuery): URLSearchParams {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before !== undefined) query.set('before', before);
  if (isRead !== undefined) query.set('is_read', String(isRead));
  if (isSeen !== undefined) query.set('is_seen', String(isSeen));
  if (archived !== undefined) query.set('archived', String(archived));
  for (const each of new Set([...(type === undefined ? [] : [type]), ...types])) {
    query.append('type', each);
  }
  return query;
}

/** The wire body of a bulk call; `undefined` when no option is set (the guide's call). */
function bulkBody({ types, upTo, isRead }: BulkOptions): Record<string, unknown> | undefined {
  const body: Record<string, unknown> = {};
  if (types !== undefined) body.types = [...types];
  if (upTo !== undefined) body.up_to = upTo;
  if (isRead !== undefined) body.is_read = isRead;
  return Object.keys(body).length > 0 ? body : undefined;
}

// One link-value of RFC 8288: `<target>` and its `; name=value` parameters.
const LINK_VALUE = /<([^>]*)>((?:\s*;\s*[^;,=\s]+(?:\s*=\s*(?:"[^"]*"|[^;,\s]*))?)*)/g;
const LINK_PARAM = /;\s*([^;,=\s]+)(?:\s*=\s*(?:"([^"]*)"|([^;,\s]*)))?/g;

/**
 * The `before` cursor of the `rel="next"` link of a `Link` header (RFC 8288); `null` when
 * there is none. The target may be a path or an absolute URL, and `rel` may list several
 * relation types (`rel="next last"`).
 */
export function nextCursor(linkHeader: string | null): string | null {
  if (!linkHeader) return null;
  for (const [, target = '', params = ''] of linkHeader.matchAll(LINK_VALUE)) {
    const rel = [...params.matchAll(LINK_PARAM)].find(([, name]) => name?.toLowerCase() === 'rel');
    const relations = (rel?.[2] ?? rel?.[3] ?? '').toLowerCase().split(/\s+/);
    if (!relations.includes('next')) continue;
    // Any base resolves a path: only the query matters.
    return new URL(target, 'http://campana.invalid/').searchParams.get('before');
  }
  return null;
}
