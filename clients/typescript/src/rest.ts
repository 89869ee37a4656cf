import { isSignedOut, SignedOutError } from './token.js';
import type { GetToken, NotificationItem, NotificationType } from './types.js';

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
  type?: NotificationType;
}

export interface NotificationPage {
  /** Newest first, like the socket's snapshot. */
  items: NotificationItem[];
  /** The `before` of the next page, from the `Link` header; `null` on the last page. */
  next: string | null;
}

/**
 * The user's REST calls. A 401 gets one retry with a refreshed token. Calls that change
 * something (mark read, mark all read) are sent with `keepalive`, so that a link followed
 * in the same click does not cancel them.
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
  async page({ before, limit = 20, isRead, type }: PageQuery = {}): Promise<NotificationPage> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== undefined) query.set('before', before);
    if (isRead !== undefined) query.set('is_read', String(isRead));
    if (type !== undefined) query.set('type', type);
    const response = await this.respond('GET', `/?${query}`);
    const items = (await response.json()) as NotificationItem[];
    return { items, next: nextCursor(response.headers.get('Link')) };
  }

  async unreadCount(): Promise<number> {
    const body = await this.request<{ count: number }>('GET', '/unread-count');
    return body.count;
  }

  markRead(id: string): Promise<NotificationItem> {
    return this.request('PATCH', `/${encodeURIComponent(id)}/read`);
  }

  async markAllRead(): Promise<void> {
    await this.request('POST', '/read-all');
  }

  private async request<T>(method: string, path: string): Promise<T> {
    const response = await this.respond(method, path);
    return (await response.json()) as T;
  }

  /** The successful response to the call; an `ApiError` otherwise. */
  private async respond(method: string, path: string): Promise<Response> {
    const url = `${this.options.baseUrl.replace(/\/$/, '')}/api/v1/notifications${path}`;
    let response = await this.send(method, url, false);
    const refreshed = response.status === 401;
    if (refreshed) response = await this.send(method, url, true);
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

  private async send(method: string, url: string, refresh: boolean): Promise<Response> {
    const token = await this.token(refresh);
    // keepalive: the request outlives the page, as a read made by clicking a link must.
    return this.fetch(url, {
      method,
      headers: { Authorization: `Bearer ${token}` },
      keepalive: method !== 'GET',
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
