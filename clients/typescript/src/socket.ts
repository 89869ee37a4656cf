import {
  CLOSE_NORMAL,
  CLOSE_ORIGIN_REFUSED,
  CLOSE_TOKEN_REFUSED,
  CLOSE_TOO_MANY_SOCKETS,
  SOCKET_PATH,
} from './protocol.js';
import {
  isSignedOut,
  renewLeadMs,
  TOKEN_TIMEOUT_MS,
  tokenExpiry,
  type TokenExpiry,
} from './token.js';
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
 * snapshot, or a REST call answered 401 twice). `signed_out`: `getToken` returned `null` or
 * threw `SignedOutError` (the `cause`).
 */
export class UnauthorizedError extends Error {
  constructor(
    readonly reason: 'token_refused' | 'signed_out',
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
  /** `navigator.onLine`; without it the browser counts as online. */
  isOnline?(): boolean;
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
  /**
   * Open the socket with `&counts=1`: the server then sends `counts.updated` (per-type unread
   * and unseen counts) after the opening `unread_count.updated` and after every change of a
   * count. Off by default, as the guide's socket; `NotificationCenter` turns it on.
   */
  counts?: boolean;
  createWebSocket?: WebSocketFactory;
  lifecycle?: PageLifecycle;
  /** How long `getToken` may take before the attempt is retried; `TOKEN_TIMEOUT_MS` by default. */
  tokenTimeoutMs?: number;
  /** 0..1, for the jitter; `Math.random` by default. */
  random?: () => number;
  now?: () => number;
}

const OPEN = 1;
/** setTimeout's longest delay: a token that lasts longer is left to the 4401 fallback. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One WebSocket and the token it was opened with. */
interface Attempt {
  readonly ws: WebSocketLike;
  /** Its token came from `getToken({ refresh: true })`. */
  readonly fresh: boolean;
  /** Opened ahead of the previous token's end. */
  readonly renewal: boolean;
  readonly expiry: TokenExpiry | null;
  sawSnapshot: boolean;
}

type TokenOutcome =
  | { kind: 'token'; token: string }
  | { kind: 'signed_out'; cause: unknown }
  | { kind: 'failed'; error: unknown };

/**
 * A socket to `/api/v1/notifications/ws` that stays connected until `close()`.
 *
 * Reconnects with backoff and jitter; resets the backoff only once a snapshot arrives
 * (a socket that opens and is closed at once with 4401 is no success). A `getToken` that
 * fails (network, 5xx, timeout) is retried the same way; only `null` or `SignedOutError`
 * from it, or a fresh token refused with 4401, stop in `unauthorized`. A refused `Origin`
 * (4403) stops in `forbidden`. Ahead of the token's `exp` the socket opens a successor with
 * a new token and swaps to it at its snapshot, so that the state stays `open`; the server's
 * 4401 at `exp` remains the fallback. Drops a socket that stays silent past `silenceLimitMs`
 * (the server sends a keepalive every period, so silence means a dead server or path);
 * drops it when the browser goes offline, and reconnects at once when the browser is back
 * online or a tab comes back from a long sleep.
 */
export class NotificationsSocket {
  /** The socket whose frames reach `onEvent`. */
  private current: Attempt | null = null;
  /** The one opened ahead of the token's end, until its snapshot replaces `current`. */
  private successor: Attempt | null = null;
  private attempt = 0;
  private renewFailures = 0;
  private refreshToken = false;
  private stopped = true;
  private generation = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private silenceTimer: ReturnType<typeof setTimeout> | undefined;
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  private successorTimer: ReturnType<typeof setTimeout> | undefined;
  private hiddenSince: number | null = null;
  /** When the last frame arrived: a socket heard from lately is alive, asleep or not. */
  private lastFrameAt = 0;
  private currentState: ConnectionState = 'idle';
  private currentAuthError: UnauthorizedError | null = null;
  private readonly silenceLimit: number;
  private readonly tokenTimeout: number;
  private readonly createWebSocket: WebSocketFactory;
  private readonly lifecycle: PageLifecycle | undefined;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(private readonly options: SocketOptions) {
    this.silenceLimit = silenceLimitMs(options.keepaliveMs ?? KEEPALIVE_MS);
    this.tokenTimeout = options.tokenTimeoutMs ?? TOKEN_TIMEOUT_MS;
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
    this.dropSockets();
    this.setState('closed');
  }

  /**
   * Reconnect now, skipping the backoff: the way out of `unauthorized` (with a fresh
   * token, once the user signed in again), `forbidden` and `stopped`, or a "reconnect now"
   * button. Does nothing after `close()`.
   */
  retryNow(): void {
    if (this.stopped) return;
    if (this.currentState === 'unauthorized') this.refreshToken = true;
    this.attempt = 0;
    this.reconnectNow();
  }

  /**
   * Stop in `unauthorized` because the server refused a refreshed token elsewhere (the REST
   * helpers call this after a 401 to their retry), or `getToken` said "signed out" there.
   * Only `retryNow()` reconnects.
   */
  markUnauthorized(cause: unknown): void {
    if (this.stopped) return;
    this.refuse(
      isSignedOut(cause)
        ? new UnauthorizedError('signed_out', describe(cause), { cause })
        : new UnauthorizedError('token_refused', 'the server refused a refreshed token', {
            cause,
          }),
    );
  }

  /**
   * Send `ping`; the server answers with a keepalive, which resets the silence watchdog.
   * Only for a check on demand: the server's own keepalives make a periodic ping useless.
   * Returns false when no socket is open.
   */
  ping(): boolean {
    const ws = this.current?.ws;
    if (ws?.readyState !== OPEN) return false;
    ws.send('ping');
    return true;
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    clearTimeout(this.retryTimer);
    this.stopRenewal();
    this.setState(this.isOffline() ? 'offline' : 'connecting');
    const fresh = this.refreshToken;
    const outcome = await this.fetchToken(fresh);
    // close() or a newer attempt ran while the token was fetched.
    if (generation !== this.generation || this.stopped) return;
    if (outcome.kind === 'signed_out') {
      this.refuse(signedOut(outcome.cause));
      return;
    }
    if (outcome.kind === 'failed') {
      // The token endpoint is down or the network is: as passing as a dropped socket.
      this.scheduleReconnect();
      return;
    }
    this.refreshToken = false;
    const attempt = this.openSocket(outcome.token, fresh, false);
    this.current = attempt;
    // Armed before the socket opens: a handshake to a frozen server hangs as silently.
    this.watchForSilence(attempt);
  }

  /** `getToken`, bounded by the token timeout; what it said, never a rejection. */
  private async fetchToken(refresh: boolean): Promise<TokenOutcome> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`getToken took over ${this.tokenTimeout} ms`)),
        this.tokenTimeout,
      );
    });
    try {
      const token = await Promise.race([
        Promise.resolve().then(() => this.options.getToken({ refresh })),
        timeout,
      ]);
      return token === null ? { kind: 'signed_out', cause: null } : { kind: 'token', token };
    } catch (error) {
      return isSignedOut(error) ? { kind: 'signed_out', cause: error } : { kind: 'failed', error };
    } finally {
      clearTimeout(timer);
    }
  }

  private openSocket(token: string, fresh: boolean, renewal: boolean): Attempt {
    const base = this.options.baseUrl.replace(/^http/, 'ws').replace(/\/$/, '');
    const counts = this.options.counts === true ? '&counts=1' : '';
    const ws = this.createWebSocket(
      `${base}${SOCKET_PATH}?token=${encodeURIComponent(token)}${counts}`,
    );
    const attempt: Attempt = {
      ws,
      fresh,
      renewal,
      expiry: tokenExpiry(token, this.now()),
      sawSnapshot: false,
    };
    ws.onmessage = (message) => this.receive(attempt, message.data);
    ws.onerror = () => undefined; // a close event always follows
    ws.onclose = (event) => this.closed(attempt, event.code);
    return attempt;
  }

  private receive(attempt: Attempt, data: unknown): void {
    const event = parseEvent(data);
    if (attempt === this.successor) {
      // The server sends the snapshot first: from it on, the successor is complete.
      if (event?.event !== 'snapshot') return;
      this.promote(attempt);
    }
    if (attempt !== this.current) return;
    this.lastFrameAt = this.now();
    this.watchForSilence(attempt);
    if (!event) return;
    if (event.event === 'snapshot') {
      this.attempt = 0;
      if (!attempt.sawSnapshot) {
        attempt.sawSnapshot = true;
        this.scheduleRenewal(attempt);
      }
      this.setState('open');
    }
    this.options.onEvent(event);
  }

  private closed(attempt: Attempt, code: number): void {
    if (attempt === this.successor) {
      this.dropSuccessor();
      this.renewalRefused(attempt, code);
      return;
    }
    if (attempt !== this.current) return;
    this.lost(attempt);
    if (!this.current) this.afterClose(attempt, code);
  }

  /** The current socket is gone; a successor on its way takes its place. */
  private lost(attempt: Attempt): void {
    this.current = null;
    clearTimeout(this.silenceTimer);
    quietlyClose(attempt.ws);
    const successor = this.successor;
    if (!successor || this.stopped) return;
    this.promote(successor);
    this.setState('connecting');
  }

  private afterClose(attempt: Attempt, code: number): void {
    if (this.stopped) return;
    if (code === CLOSE_ORIGIN_REFUSED) {
      this.forbid();
      return;
    }
    if (code === CLOSE_TOO_MANY_SOCKETS) {
      this.setState('stopped');
      return;
    }
    if (code === CLOSE_TOKEN_REFUSED) {
      // A token that expired on a live socket is refreshed; a fresh one refused before its
      // snapshot means the user is signed out, and every retry would be refused as well.
      if (attempt.fresh && !attempt.sawSnapshot) {
        this.refuse(refusedToken(attempt));
        return;
      }
      this.refreshToken = true;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    clearTimeout(this.retryTimer);
    this.stopRenewal();
    const delay = this.backoff(this.attempt);
    this.attempt += 1;
    this.setState(this.isOffline() ? 'offline' : 'reconnecting');
    this.retryTimer = setTimeout(() => void this.open(), delay);
  }

  /** The backoff's step `index`, with ±20 % jitter so that a restart is no stampede. */
  private backoff(index: number): number {
    const base = BACKOFF_MS[Math.min(index, BACKOFF_MS.length - 1)] ?? 30_000;
    return Math.round(base * (0.8 + 0.4 * this.random()));
  }

  /** Renew `attempt`'s token ahead of its end (it has just gone live). */
  private scheduleRenewal(attempt: Attempt): void {
    clearTimeout(this.renewTimer);
    this.renewFailures = 0;
    const expiry = attempt.expiry;
    if (!expiry) return; // no `exp`: the server refuses it anyway
    const delay = expiry.expiresAt - renewLeadMs(expiry.lifetime) - this.now();
    // A renewed token due again at once (this page's clock far off, and no `iat`) would
    // renew in a loop: its 4401 takes the usual road instead.
    if ((delay <= 0 && attempt.renewal) || delay > MAX_TIMER_MS) return;
    this.renewTimer = setTimeout(() => void this.renew(attempt), Math.max(0, delay));
  }

  private async renew(owner: Attempt): Promise<void> {
    if (this.current !== owner || this.successor || this.stopped) return;
    const generation = this.generation;
    const outcome = await this.fetchToken(true);
    if (generation !== this.generation || this.current !== owner || this.stopped) return;
    if (outcome.kind === 'signed_out') {
      this.refuse(signedOut(outcome.cause));
      return;
    }
    const expiry = outcome.kind === 'token' ? tokenExpiry(outcome.token, this.now()) : null;
    // A failure, or the same token again (from a cache): try again while the current lasts.
    if (outcome.kind === 'failed' || !expiry || (owner.expiry && expiry.exp <= owner.expiry.exp)) {
      this.retryRenewal(owner);
      return;
    }
    const successor = this.openSocket(outcome.token, true, true);
    this.successor = successor;
    this.successorTimer = setTimeout(() => {
      if (this.successor !== successor) return;
      this.dropSuccessor();
      this.retryRenewal(owner);
    }, this.silenceLimit);
  }

  private retryRenewal(owner: Attempt): void {
    if (this.current !== owner || !owner.expiry) return;
    const delay = this.backoff(this.renewFailures);
    this.renewFailures += 1;
    // Past the token's end the server closes the socket with 4401: the usual road.
    if (this.now() + delay >= owner.expiry.expiresAt) return;
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(owner), delay);
  }

  /** The successor closed before its snapshot. */
  private renewalRefused(successor: Attempt, code: number): void {
    if (this.stopped) return;
    if (code === CLOSE_ORIGIN_REFUSED) this.forbid();
    else if (code === CLOSE_TOKEN_REFUSED) this.refuse(refusedToken(successor));
    else if (this.current) this.retryRenewal(this.current);
  }

  /** The successor's snapshot came: it replaces the current socket, which closes. */
  private promote(successor: Attempt): void {
    const previous = this.current;
    clearTimeout(this.successorTimer);
    this.successor = null;
    this.current = successor;
    if (previous) quietlyClose(previous.ws);
    this.watchForSilence(successor);
  }

  private reconnectNow(): void {
    if (this.stopped) return;
    this.dropSockets();
    void this.open();
  }

  private refuse(error: UnauthorizedError): void {
    this.halt();
    // Signing out on purpose says nothing; a refused token is worth a line to whoever debugs.
    if (error.reason === 'token_refused') console.warn(`Campana: ${error.message}`);
    this.setState('unauthorized', error);
  }

  private forbid(): void {
    this.halt();
    const origin = typeof location === 'undefined' ? '' : ` (${location.origin})`;
    console.error(
      `Campana refused this page's origin${origin} with close 4403: add it to the server's ` +
        'CAMPANA_ALLOWED_ORIGINS. Not reconnecting.',
    );
    this.setState('forbidden');
  }

  /** Stop every attempt; only `retryNow()` starts again. */
  private halt(): void {
    this.generation += 1; // a token being fetched for an older attempt is not used
    clearTimeout(this.retryTimer);
    this.dropSockets();
  }

  private watchForSilence(attempt: Attempt): void {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      if (this.current !== attempt) return;
      // A frozen server, or a NAT or proxy that forgot the connection, sends no close: the
      // browser would wait on it for many minutes. Its close handshake would never finish
      // either, so the socket is dropped rather than awaited.
      this.lost(attempt);
      if (!this.current) this.scheduleReconnect();
    }, this.silenceLimit);
  }

  private stopRenewal(): void {
    clearTimeout(this.renewTimer);
    this.dropSuccessor();
  }

  private dropSuccessor(): void {
    clearTimeout(this.successorTimer);
    const successor = this.successor;
    this.successor = null;
    if (successor) quietlyClose(successor.ws);
  }

  private dropSockets(): void {
    clearTimeout(this.silenceTimer);
    this.stopRenewal();
    const current = this.current;
    this.current = null;
    if (current) quietlyClose(current.ws);
  }

  private isOffline(): boolean {
    return this.lifecycle?.isOnline?.() === false;
  }

  private readonly onOnline = (): void => {
    const waiting = ['connecting', 'reconnecting', 'offline', 'stopped'];
    if (!waiting.includes(this.currentState)) return;
    this.attempt = 0; // a network that is back is a fresh start
    this.reconnectNow();
  };

  /**
   * The socket is gone with the network, though the browser may not say so for minutes.
   * Reconnect attempts go on with the usual backoff while offline: they fail at once and
   * cost nothing, and `offline` is a guess (a VPN or a second interface may still work).
   */
  private readonly onOffline = (): void => {
    if (!this.current) {
      if (this.currentState === 'reconnecting') this.setState('offline');
      return;
    }
    this.dropSockets();
    this.scheduleReconnect();
  };

  private readonly onVisibilityChange = (): void => {
    if (!this.lifecycle?.isVisible()) {
      this.hiddenSince = this.now();
      return;
    }
    const hiddenFor = this.hiddenSince === null ? 0 : this.now() - this.hiddenSince;
    this.hiddenSince = null;
    if (this.currentState === 'unauthorized' || this.currentState === 'forbidden') return;
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

function parseEvent(data: unknown): ServerEvent | null {
  if (typeof data !== 'string') return null;
  try {
    return JSON.parse(data) as ServerEvent;
  } catch {
    return null;
  }
}

function quietlyClose(ws: WebSocketLike): void {
  ws.onclose = null;
  ws.onmessage = null;
  ws.close(CLOSE_NORMAL);
}

function signedOut(cause: unknown): UnauthorizedError {
  const message = cause === null ? 'getToken returned null' : `getToken: ${describe(cause)}`;
  return new UnauthorizedError('signed_out', message, { cause });
}

function refusedToken(attempt: Attempt): UnauthorizedError {
  const hint =
    attempt.expiry === null
      ? 'it has no readable `exp` claim, which Campana requires'
      : 'check its signature (CAMPANA_JWT_SECRET, HS256 by default), `exp` and `sub`';
  return new UnauthorizedError(
    'token_refused',
    `the server refused a fresh token (close 4401): ${hint}`,
  );
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
    isOnline: () => typeof navigator === 'undefined' || navigator.onLine !== false,
  };
}
