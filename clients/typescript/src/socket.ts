import type { ConnectionState, GetToken, ServerEvent } from './types.js';

/** Delays between reconnect attempts, in ms: 1 s, 2 s, 5 s, 10 s, 20 s, then 30 s. */
export const BACKOFF_MS: readonly number[] = [1000, 2000, 5000, 10000, 20000, 30000];
export const PING_INTERVAL_MS = 30_000;
/** A tab hidden this long may hold a dead socket: reconnect as soon as it is visible. */
export const LONG_SLEEP_MS = 60_000;

export const CLOSE_TOKEN_REFUSED = 4401;
export const CLOSE_ORIGIN_REFUSED = 4403;
export const CLOSE_TOO_MANY_SOCKETS = 4429;

/** The part of the browser's WebSocket this client uses (tests pass a fake). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: Event) => unknown) | null;
  onmessage: ((event: MessageEvent) => unknown) | null;
  onclose: ((event: CloseEvent) => unknown) | null;
  onerror: ((event: Event) => unknown) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

/** Where `online` and `visibilitychange` come from; `undefined` outside a browser. */
export interface PageLifecycle {
  addEventListener(type: 'online' | 'visibilitychange', listener: () => void): void;
  removeEventListener(type: 'online' | 'visibilitychange', listener: () => void): void;
  isVisible(): boolean;
}

export interface SocketOptions {
  baseUrl: string;
  getToken: GetToken;
  onEvent: (event: ServerEvent) => void;
  onStateChange?: (state: ConnectionState) => void;
  createWebSocket?: WebSocketFactory;
  lifecycle?: PageLifecycle;
  /** 0..1, for the jitter; `Math.random` by default. */
  random?: () => number;
  now?: () => number;
}

const OPEN = 1;

/**
 * A socket to `/api/v1/notifications/ws` that stays connected until `close()`.
 *
 * Reconnects with backoff and jitter; resets the backoff only once a snapshot arrives
 * (a socket that opens and is closed at once with 4401 is no success); asks for a fresh
 * token after 4401; pings every 30 s; reconnects at once when the browser is back online
 * or a tab comes back from a long sleep.
 */
export class NotificationsSocket {
  private ws: WebSocketLike | null = null;
  private attempt = 0;
  private refreshToken = false;
  private stopped = true;
  private generation = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private hiddenSince: number | null = null;
  private currentState: ConnectionState = 'idle';
  private readonly createWebSocket: WebSocketFactory;
  private readonly lifecycle: PageLifecycle | undefined;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(private readonly options: SocketOptions) {
    this.createWebSocket = options.createWebSocket ?? ((url) => new WebSocket(url));
    this.lifecycle = options.lifecycle ?? browserLifecycle();
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** Start (or restart after `close()`). */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.lifecycle?.addEventListener('online', this.onOnline);
    this.lifecycle?.addEventListener('visibilitychange', this.onVisibilityChange);
    void this.open();
  }

  /** Close for good: no reconnect until `connect()` is called again. */
  close(): void {
    this.stopped = true;
    this.generation += 1;
    this.lifecycle?.removeEventListener('online', this.onOnline);
    this.lifecycle?.removeEventListener('visibilitychange', this.onVisibilityChange);
    clearTimeout(this.retryTimer);
    this.dropSocket(1000);
    this.setState('closed');
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    clearTimeout(this.retryTimer);
    this.setState('connecting');
    let token: string;
    try {
      token = await this.options.getToken({ refresh: this.refreshToken });
    } catch {
      if (generation === this.generation) this.scheduleReconnect();
      return;
    }
    // close() or a newer attempt ran while the token was fetched.
    if (generation !== this.generation || this.stopped) return;
    this.refreshToken = false;
    const url = `${this.options.baseUrl.replace(/^http/, 'ws').replace(/\/$/, '')}/api/v1/notifications/ws?token=${encodeURIComponent(token)}`;
    const ws = this.createWebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.pingTimer = setInterval(() => {
        if (ws.readyState === OPEN) ws.send('ping');
      }, PING_INTERVAL_MS);
    };
    ws.onmessage = (message) => this.receive(message.data);
    ws.onerror = () => undefined; // a close event always follows
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      this.afterClose(event.code);
    };
  }

  private receive(data: unknown): void {
    if (typeof data !== 'string') return;
    let event: ServerEvent;
    try {
      event = JSON.parse(data) as ServerEvent;
    } catch {
      return;
    }
    if (event.event === 'snapshot') {
      this.attempt = 0;
      this.setState('open');
    }
    this.options.onEvent(event);
  }

  private afterClose(code: number): void {
    if (this.stopped) return;
    if (code === CLOSE_ORIGIN_REFUSED || code === CLOSE_TOO_MANY_SOCKETS) {
      this.setState('stopped');
      return;
    }
    if (code === CLOSE_TOKEN_REFUSED) this.refreshToken = true;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] ?? 30_000;
    this.attempt += 1;
    // ±20 % jitter, so that a server restart is not followed by a synchronised stampede.
    const delay = Math.round(base * (0.8 + 0.4 * this.random()));
    this.setState('reconnecting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.open(), delay);
  }

  private reconnectNow(): void {
    if (this.stopped) return;
    this.dropSocket(1000);
    void this.open();
  }

  private dropSocket(code: number): void {
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(code);
    }
  }

  private readonly onOnline = (): void => {
    if (this.currentState !== 'open') this.reconnectNow();
  };

  private readonly onVisibilityChange = (): void => {
    if (!this.lifecycle?.isVisible()) {
      this.hiddenSince = this.now();
      return;
    }
    const hiddenFor = this.hiddenSince === null ? 0 : this.now() - this.hiddenSince;
    this.hiddenSince = null;
    if (this.currentState !== 'open' || hiddenFor >= LONG_SLEEP_MS) this.reconnectNow();
  };

  private setState(state: ConnectionState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.options.onStateChange?.(state);
  }
}

function browserLifecycle(): PageLifecycle | undefined {
  if (typeof window === 'undefined' || typeof document === 'undefined') return undefined;
  return {
    addEventListener: (type, listener) =>
      (type === 'online' ? window : document).addEventListener(type, listener),
    removeEventListener: (type, listener) =>
      (type === 'online' ? window : document).removeEventListener(type, listener),
    isVisible: () => document.visibilityState === 'visible',
  };
}
