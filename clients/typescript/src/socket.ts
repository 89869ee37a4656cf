import {
  CLOSE_NORMAL,
  CLOSE_ORIGIN_REFUSED,
  CLOSE_TOKEN_REFUSED,
  CLOSE_TOO_MANY_SOCKETS,
  SOCKET_PATH,
} from './protocol.js';
import type { ConnectionState, GetToken, ServerEvent } from './types.js';

/** Delays between reconnect attempts, in ms: 1 s, 2 s, 5 s, 10 s, 20 s, then 30 s. */
export const BACKOFF_MS: readonly number[] = [1000, 2000, 5000, 10000, 20000, 30000];
/** The server's keepalive period: `CAMPANA_KEEPALIVE_SECONDS`, 25 s by default. */
export const KEEPALIVE_MS = 25_000;
/** A tab hidden this long may hold a dead socket: reconnect as soon as it is visible. */
export const LONG_SLEEP_MS = 60_000;

/**
 * How long a socket may go without a frame before it counts as dead: two keepalive periods,
 * so that one late keepalive is forgiven, plus half a period for a busy server or network,
 * kept between 1 s and 10 s (60 s at the default 25 s keepalive, 5 s at 2 s).
 */
export function silenceLimitMs(keepaliveMs: number): number {
  return 2 * keepaliveMs + Math.min(10_000, Math.max(1_000, keepaliveMs / 2));
}

/**
 * Why the connection is `unauthorized`. `token_refused`: the server refused a token that
 * `getToken({ refresh: true })` had just returned (a socket closed with 4401 before its
 * snapshot, or a REST call answered 401 twice). `token_unavailable`: `getToken` threw; the
 * `cause` is what it threw.
 */
export class UnauthorizedError extends Error {
  constructor(
    readonly reason: 'token_refused' | 'token_unavailable',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UnauthorizedError';
  }
}

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

type LifecycleEvent = 'online' | 'offline' | 'visibilitychange';

/** Where `online`, `offline` and `visibilitychange` come from; `undefined` outside a browser. */
export interface PageLifecycle {
  addEventListener(type: LifecycleEvent, listener: () => void): void;
  removeEventListener(type: LifecycleEvent, listener: () => void): void;
  isVisible(): boolean;
}

export interface SocketOptions {
  baseUrl: string;
  getToken: GetToken;
  /**
   * Each frame but the keepalives' answers. `replayed` is true for the events a tab that
   * joins is sent by the tab holding the browser's socket (`SharedSocket`): not news.
   */
  onEvent: (event: ServerEvent, replayed?: boolean) => void;
  /** `authError` is set in the `unauthorized` state only. */
  onStateChange?: (state: ConnectionState, authError: UnauthorizedError | null) => void;
  /** The server's `CAMPANA_KEEPALIVE_SECONDS`, in ms; `KEEPALIVE_MS` by default. */
  keepaliveMs?: number;
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
 * token after 4401, and stops in `unauthorized` when that fresh token is refused too;
 * drops a socket that stays silent past `silenceLimitMs` (the server sends a keepalive
 * every period, so silence means a dead server or path); drops it when the browser goes
 * offline, and reconnects at once when the browser is back online or a tab comes back
 * from a long sleep.
 */
export class NotificationsSocket {
  private ws: WebSocketLike | null = null;
  /** Whether the current socket's token came from `getToken({ refresh: true })`. */
  private tokenWasFresh = false;
  private sawSnapshot = false;
  private attempt = 0;
  private refreshToken = false;
  private stopped = true;
  private generation = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private silenceTimer: ReturnType<typeof setTimeout> | undefined;
  private hiddenSince: number | null = null;
  /** When the last frame arrived: a socket heard from lately is alive, asleep or not. */
  private lastFrameAt = 0;
  private currentState: ConnectionState = 'idle';
  private currentAuthError: UnauthorizedError | null = null;
  private readonly silenceLimit: number;
  private readonly createWebSocket: WebSocketFactory;
  private readonly lifecycle: PageLifecycle | undefined;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(private readonly options: SocketOptions) {
    this.silenceLimit = silenceLimitMs(options.keepaliveMs ?? KEEPALIVE_MS);
    this.createWebSocket = options.createWebSocket ?? ((url) => new WebSocket(url));
    this.lifecycle = options.lifecycle ?? browserLifecycle();
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** Why the state is `unauthorized`; `null` in every other state. */
  get authError(): UnauthorizedError | null {
    return this.currentAuthError;
  }

  /** Start (or restart after `close()`). */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.lifecycle?.addEventListener('online', this.onOnline);
    this.lifecycle?.addEventListener('offline', this.onOffline);
    this.lifecycle?.addEventListener('visibilitychange', this.onVisibilityChange);
    void this.open();
  }

  /** Close for good: no reconnect until `connect()` is called again. */
  close(): void {
    this.stopped = true;
    this.generation += 1;
    this.lifecycle?.removeEventListener('online', this.onOnline);
    this.lifecycle?.removeEventListener('offline', this.onOffline);
    this.lifecycle?.removeEventListener('visibilitychange', this.onVisibilityChange);
    clearTimeout(this.retryTimer);
    this.dropSocket();
    this.setState('closed');
  }

  /**
   * Reconnect now, skipping the backoff: the way out of `unauthorized` (with a fresh
   * token, once the user signed in again) and of `stopped`, or a "reconnect now" button.
   * Does nothing after `close()`.
   */
  retryNow(): void {
    if (this.stopped) return;
    if (this.currentState === 'unauthorized') this.refreshToken = true;
    this.attempt = 0;
    this.reconnectNow();
  }

  /**
   * Stop in `unauthorized` because the server refused a refreshed token elsewhere (the REST
   * helpers call this after a 401 to their retry). Only `retryNow()` reconnects.
   */
  markUnauthorized(cause: unknown): void {
    if (this.stopped) return;
    this.refuse(
      new UnauthorizedError('token_refused', 'the server refused a refreshed token', { cause }),
    );
  }

  /**
   * Send `ping`; the server answers with a keepalive, which resets the silence watchdog.
   * Only for a check on demand: the server's own keepalives make a periodic ping useless.
   * Returns false when no socket is open.
   */
  ping(): boolean {
    if (this.ws?.readyState !== OPEN) return false;
    this.ws.send('ping');
    return true;
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    clearTimeout(this.retryTimer);
    this.setState('connecting');
    const fresh = this.refreshToken;
    let token: string;
    try {
      token = await this.options.getToken({ refresh: fresh });
    } catch (error) {
      if (generation !== this.generation || this.stopped) return;
      // Retrying would ask the same failing getToken: the app must sign the user in again.
      this.refuse(
        new UnauthorizedError('token_unavailable', `getToken failed: ${describe(error)}`, {
          cause: error,
        }),
      );
      return;
    }
    // close() or a newer attempt ran while the token was fetched.
    if (generation !== this.generation || this.stopped) return;
    this.refreshToken = false;
    const url = `${this.options.baseUrl.replace(/^http/, 'ws').replace(/\/$/, '')}${SOCKET_PATH}?token=${encodeURIComponent(token)}`;
    const ws = this.createWebSocket(url);
    this.ws = ws;
    this.tokenWasFresh = fresh;
    this.sawSnapshot = false;
    // Armed before the socket opens: a handshake to a frozen server hangs as silently.
    this.watchForSilence(ws);
    ws.onmessage = (message) => {
      this.lastFrameAt = this.now();
      this.watchForSilence(ws);
      this.receive(message.data);
    };
    ws.onerror = () => undefined; // a close event always follows
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.silenceTimer);
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
      this.sawSnapshot = true;
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
    if (code === CLOSE_TOKEN_REFUSED) {
      // A token that expired on a live socket is refreshed; a fresh one refused before its
      // snapshot means the user is signed out, and every retry would be refused as well.
      if (this.tokenWasFresh && !this.sawSnapshot) {
        this.refuse(
          new UnauthorizedError('token_refused', 'the server refused a fresh token (close 4401)'),
        );
        return;
      }
      this.refreshToken = true;
    }
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
    this.dropSocket();
    void this.open();
  }

  private refuse(error: UnauthorizedError): void {
    this.generation += 1; // a token being fetched for an older attempt is not used
    clearTimeout(this.retryTimer);
    this.dropSocket();
    this.setState('unauthorized', error);
  }

  private watchForSilence(ws: WebSocketLike): void {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      if (this.ws !== ws) return;
      // A frozen server, or a NAT or proxy that forgot the connection, sends no close: the
      // browser would wait on it for many minutes. Its close handshake would never finish
      // either, so the socket is dropped rather than awaited.
      this.dropSocket();
      this.scheduleReconnect();
    }, this.silenceLimit);
  }

  private dropSocket(): void {
    clearTimeout(this.silenceTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(CLOSE_NORMAL);
    }
  }

  private readonly onOnline = (): void => {
    if (this.currentState !== 'open' && this.currentState !== 'unauthorized') this.reconnectNow();
  };

  /**
   * The socket is gone with the network, though the browser may not say so for minutes.
   * Reconnect attempts go on with the usual backoff while offline: they fail at once and
   * cost nothing, and `offline` is a guess (a VPN or a second interface may still work).
   */
  private readonly onOffline = (): void => {
    if (!this.ws) return;
    this.dropSocket();
    this.scheduleReconnect();
  };

  private readonly onVisibilityChange = (): void => {
    if (!this.lifecycle?.isVisible()) {
      this.hiddenSince = this.now();
      return;
    }
    const hiddenFor = this.hiddenSince === null ? 0 : this.now() - this.hiddenSince;
    this.hiddenSince = null;
    if (this.currentState === 'unauthorized') return;
    // After a long hide the socket may have died silently (the machine slept); one that
    // kept receiving frames meanwhile (another tab used it: SharedSocket) has not.
    const heardLately = this.now() - this.lastFrameAt < this.silenceLimit / 2;
    if (this.currentState !== 'open' || (hiddenFor >= LONG_SLEEP_MS && !heardLately))
      this.reconnectNow();
  };

  private setState(state: ConnectionState, authError: UnauthorizedError | null = null): void {
    if (state === this.currentState && authError === this.currentAuthError) return;
    this.currentState = state;
    this.currentAuthError = authError;
    this.options.onStateChange?.(state, authError);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The page's own events, in a browser; `undefined` elsewhere (server rendering, Node). */
export function browserLifecycle(): PageLifecycle | undefined {
  if (typeof window === 'undefined' || typeof document === 'undefined') return undefined;
  const target = (type: LifecycleEvent) => (type === 'visibilitychange' ? document : window);
  return {
    addEventListener: (type, listener) => target(type).addEventListener(type, listener),
    removeEventListener: (type, listener) => target(type).removeEventListener(type, listener),
    isVisible: () => document.visibilityState === 'visible',
  };
}
