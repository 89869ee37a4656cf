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
    created_at: new Date(Date.UTC(2026, 10, 28, 7, 0, counter)).toISOString(),
    ...overrides,
  };
}
