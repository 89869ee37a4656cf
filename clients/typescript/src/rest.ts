import type { GetToken, NotificationItem } from './types.js';

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
   * Called when a refreshed token is refused too (401 to the retry), before the call
   * rejects with that `ApiError`: the user is signed out, not offline.
   */
  onUnauthorized?: (error: ApiError) => void;
}

/** The user's REST calls. A 401 gets one retry with a refreshed token. */
export class NotificationsApi {
  private readonly fetch: typeof fetch;

  constructor(private readonly options: ApiOptions) {
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  list({ skip = 0, limit = 20 } = {}): Promise<NotificationItem[]> {
    return this.request('GET', `/?skip=${skip}&limit=${limit}`);
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
    return (await response.json()) as T;
  }

  private async send(method: string, url: string, refresh: boolean): Promise<Response> {
    const token = await this.options.getToken({ refresh });
    return this.fetch(url, { method, headers: { Authorization: `Bearer ${token}` } });
  }
}
