import { expect, vi } from 'vitest';

import type { PageLifecycle, WebSocketLike } from '../src/socket.js';
import type { NotificationItem } from '../src/types.js';

/** A socket the test drives: it opens, receives frames and closes on command. */
export class FakeWebSocket implements WebSocketLike {
  static created: FakeWebSocket[] = [];
  readyState = 0;
  sent: string[] = [];
  closedWith: number | undefined;
  onopen: WebSocketLike['onopen'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onclose: WebSocketLike['onclose'] = null;
  onerror: WebSocketLike['onerror'] = null;

  constructor(readonly url: string) {
    FakeWebSocket.created.push(this);
  }

  static latest(): FakeWebSocket {
    const socket = FakeWebSocket.created.at(-1);
    if (!socket) throw new Error('no socket was created');
    return socket;
  }

  get token(): string {
    return new URL(this.url).searchParams.get('token') ?? '';
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.(new Event('open'));
  }

  receive(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) } as MessageEvent);
  }

  serverClose(code: number): void {
    this.readyState = 3;
    this.onclose?.({ code } as CloseEvent);
  }

  send(data: string): void {
    this.sent.push(data);
  }

  close(code?: number): void {
    this.closedWith = code;
    this.readyState = 3;
  }
}

export class FakeLifecycle implements PageLifecycle {
  visible = true;
  online = true;
  private readonly listeners = new Map<string, Set<() => void>>();

  addEventListener(type: string, listener: () => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)?.add(listener);
  }

  removeEventListener(type: string, listener: () => void): void {
    this.listeners.get(type)?.delete(listener);
  }

  isVisible(): boolean {
    return this.visible;
  }

  isOnline(): boolean {
    return this.online;
  }

  emit(type: 'online' | 'offline' | 'visibilitychange'): void {
    for (const listener of this.listeners.get(type) ?? []) listener();
  }
}

let counter = 0;

export function item(overrides: Partial<NotificationItem> = {}): NotificationItem {
  counter += 1;
  return {
    id: `00000000-0000-4000-8000-${String(counter).padStart(12, '0')}`,
    message: `message ${counter}`,
    type: 'GENERIC_INFO',
    link_url: null,
    is_read: false,
    is_seen: false,
    is_archived: false,
    created_at: new Date(Date.UTC(2026, 10, 28, 7, 0, counter)).toISOString(),
    ...overrides,
  };
}

/** A JSON response, as the server answers. */
export function answer(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

/** A page of `GET /api/v1/notifications/`, with the server's `Link` header when `next` is set. */
export function pageAnswer(items: NotificationItem[], next: string | null = null): Response {
  const link = `</api/v1/notifications/?limit=20&before=${next}>; rel="next"`;
  return answer(200, items, next === null ? {} : { Link: link });
}

/**
 * A fetch that answers each call when the test says so, and records the calls as
 * `METHOD /path?query`, the path under `/api/v1/notifications`.
 */
export function controlledFetch() {
  type Call = { call: string; answer: (response: Response) => void; fail: (error: Error) => void };
  const calls: Call[] = [];
  const fetch = vi.fn<typeof globalThis.fetch>((url, init) => {
    const call = `${init?.method} ${String(url).replace(/^.*\/api\/v1\/notifications/, '')}`;
    return new Promise((answer, fail) => calls.push({ call, answer, fail }));
  });
  const next = async (call: string) => {
    await vi.waitFor(() => expect(calls[0]?.call).toBe(call));
    return calls.shift() as Call;
  };
  return { fetch, calls, next };
}

/** An unsigned JWT with these claims: the client reads `exp` and `iat`, never the signature. */
export function jwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) =>
    btoa(JSON.stringify(value)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}.signature`;
}
