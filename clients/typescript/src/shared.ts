import {
  browserLifecycle,
  NotificationsSocket,
  type PageLifecycle,
  type SocketOptions,
  UnauthorizedError,
} from './socket.js';
import type { ConnectionState, ServerEvent } from './types.js';

/** The part of the browser's BroadcastChannel this client uses (tests pass a fake). */
export interface BroadcastChannelLike {
  onmessage: ((event: MessageEvent) => unknown) | null;
  postMessage(message: unknown): void;
  close(): void;
}

/** The part of `navigator.locks` this client uses (tests pass a fake). */
export interface LockManagerLike {
  request(
    name: string,
    options: { mode: 'exclusive'; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown>;
}

export interface SharedSocketOptions extends SocketOptions {
  /** One group of tabs per server and user, e.g. `campana:<baseUrl>:<userKey>`. */
  channelName: string;
  /** How long every tab of the group may stay hidden before the socket is let go. */
  hiddenGraceMs?: number;
  /** `new BroadcastChannel(name)` by default; without either, each tab has its own socket. */
  createChannel?: (name: string) => BroadcastChannelLike;
  /** `navigator.locks` by default; `null` elects the leader with heartbeats instead. */
  locks?: LockManagerLike | null;
  /** This tab's id, random by default; the lowest id wins a tie in a heartbeat election. */
  tabId?: string;
}

/** Every tab hidden this long: the leader closes the socket and reports `idle`. */
export const HIDDEN_GRACE_MS = 60_000;
/**
 * The events the leader keeps after the latest snapshot, to replay to a tab that joins.
 * Past it the replay is dropped, and the next tab that joins makes the leader reconnect:
 * the new snapshot catches every tab up.
 */
export const REPLAY_LIMIT = 1_000;
/** Without Web Locks: the leader's heartbeat period, and the silence that ends its term. */
const HEARTBEAT_MS = 250;
const LEADER_SILENCE_MS = 1_000;
/** Without Web Locks: how long a claim waits for a leader or a lower tab id to object. */
const CLAIM_MS = 250;
/** Followers repeat their visibility this often; the leader forgets a tab silent thrice as long. */
const PRESENCE_MS = 5_000;
const PEER_TTL_MS = 3 * PRESENCE_MS;

interface AuthInfo {
  reason: UnauthorizedError['reason'];
  message: string;
}

/** What tabs say to each other on the channel; every message also names its sender. */
type Body =
  | { type: 'hello'; visible: boolean } // joined: the leader answers with `welcome`
  | {
      type: 'welcome';
      to: string;
      state: ConnectionState;
      auth: AuthInfo | null;
      replay: ServerEvent[];
    }
  | { type: 'leader' } // a new leader, or (without Web Locks) its heartbeat
  | { type: 'claim' } // without Web Locks: this tab would lead
  | { type: 'presence'; visible: boolean }
  | { type: 'event'; event: ServerEvent }
  | { type: 'state'; state: ConnectionState; auth: AuthInfo | null }
  | { type: 'retry' }
  | { type: 'unauthorized'; cause: string }
  | { type: 'bye' };
type Message = Body & { from: string };

type Role = 'off' | 'solo' | 'follower' | 'candidate' | 'leader';

/**
 * One socket for every tab of a browser that shows the same user of the same server: a
 * drop-in for `NotificationsSocket`.
 *
 * The tabs elect a leader, with Web Locks where the browser has them (the lock is held
 * until the tab closes, so the next tab in line takes over at once) and with heartbeats
 * over the channel where it has not. The leader alone holds a `NotificationsSocket`; it
 * passes every event and state change to the other tabs, and replays the latest snapshot
 * and the events after it to a tab that joins (applying them twice is harmless: the store
 * keys items by id). A new leader opens its own socket, whose snapshot catches every tab up.
 * When every tab has been hidden for `hiddenGraceMs`, the leader closes the socket and the
 * state is `idle`; the first tab to be shown again reconnects it.
 *
 * Without `BroadcastChannel` (or `createChannel`), each tab simply has its own socket.
 */
export class SharedSocket {
  private role: Role = 'off';
  private currentState: ConnectionState = 'idle';
  private currentAuthError: UnauthorizedError | null = null;
  /** Bumped by every join and leave: a lock granted or a timer due for an older one is ignored. */
  private generation = 0;
  private readonly tabId: string;
  private readonly hiddenGraceMs: number;
  private readonly now: () => number;
  private lifecycle: PageLifecycle | undefined;
  private channel: BroadcastChannelLike | null = null;
  private heartbeatMode = false;
  private releaseLock: (() => void) | null = null;
  private abortLock: AbortController | null = null;
  private presenceTimer: ReturnType<typeof setInterval> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  /** Pagehide left the group; pageshow from the back/forward cache joins it again. */
  private pageHidden = false;
  private pageListening = false;

  // Follower, without Web Locks.
  private leaderId: string | null = null;
  private leaderDeadline = 0;
  private claimDeadline = 0;

  // Leader.
  private socket: NotificationsSocket | null = null;
  /** The socket was closed because every tab was hidden. */
  private released = false;
  private graceTimer: ReturnType<typeof setTimeout> | undefined;
  private replay: ServerEvent[] = [];
  private replayOverflowed = false;
  private readonly peers = new Map<string, { visible: boolean; seenAt: number }>();

  constructor(private readonly options: SharedSocketOptions) {
    this.tabId = options.tabId ?? randomId();
    this.hiddenGraceMs = options.hiddenGraceMs ?? HIDDEN_GRACE_MS;
    this.now = options.now ?? Date.now;
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** Why the state is `unauthorized`; `null` in every other state. */
  get authError(): UnauthorizedError | null {
    return this.currentAuthError;
  }

  /** Join the group (or open this tab's own socket without `BroadcastChannel`). */
  connect(): void {
    if (this.role !== 'off') return;
    this.pageHidden = false;
    this.listenToPage(true);
    this.join();
  }

  /** Leave the group for good: no events or reconnects until `connect()` is called again. */
  close(): void {
    this.listenToPage(false);
    this.pageHidden = false;
    this.leave();
    this.setState('closed');
  }

  /** Reconnect now, skipping the backoff; a follower asks the leader to. */
  retryNow(): void {
    if (this.role === 'leader' && this.released) this.resume();
    else if (this.role === 'leader' || this.role === 'solo') this.socket?.retryNow();
    else if (this.role !== 'off') this.post({ type: 'retry' });
  }

  /** Stop in `unauthorized` (REST saw a fresh token refused); a follower asks the leader to. */
  markUnauthorized(cause: unknown): void {
    if (this.role === 'leader' || this.role === 'solo') this.socket?.markUnauthorized(cause);
    else if (this.role !== 'off') this.post({ type: 'unauthorized', cause: describe(cause) });
  }

  private join(): void {
    const generation = ++this.generation;
    this.lifecycle = this.options.lifecycle ?? browserLifecycle();
    const createChannel = this.options.createChannel ?? browserChannel();
    if (!createChannel) {
      this.role = 'solo';
      this.startSocket();
      return;
    }
    this.role = 'follower';
    this.setState('connecting');
    const channel = createChannel(this.options.channelName);
    this.channel = channel;
    channel.onmessage = (message) => this.receive(message.data as Message);
    this.lifecycle?.addEventListener('visibilitychange', this.onVisibilityChange);
    this.presenceTimer = setInterval(() => this.everyPresencePeriod(), PRESENCE_MS);
    this.post({ type: 'hello', visible: this.visible() });

    const locks = this.options.locks !== undefined ? this.options.locks : browserLocks();
    this.heartbeatMode = false;
    if (!locks) {
      this.electByHeartbeat();
      return;
    }
    const abort = new AbortController();
    this.abortLock = abort;
    locks
      .request(this.options.channelName, { mode: 'exclusive', signal: abort.signal }, () => {
        if (generation !== this.generation) return Promise.resolve();
        this.abortLock = null;
        return new Promise<void>((resolve) => {
          this.releaseLock = resolve;
          this.becomeLeader();
        });
      })
      .catch(() => {
        // Aborted by leave(); or refused (a sandboxed frame, a document not fully active):
        // then the heartbeat elects, rather than leaving the tab without a socket.
        if (generation === this.generation && !abort.signal.aborted) {
          this.abortLock = null;
          this.electByHeartbeat();
        }
      });
  }

  private electByHeartbeat(): void {
    this.heartbeatMode = true;
    // A leader answers a hello at once: one heartbeat period of silence means none.
    this.leaderId = null;
    this.leaderDeadline = this.now() + HEARTBEAT_MS;
    this.heartbeatTimer = setInterval(() => this.everyHeartbeat(), HEARTBEAT_MS);
  }

  private leave(): void {
    this.generation += 1;
    if (this.role === 'leader' || this.role === 'solo') this.stopSocket();
    this.post({ type: 'bye' }); // no channel in a tab of its own
    this.role = 'off';
    this.lifecycle?.removeEventListener('visibilitychange', this.onVisibilityChange);
    clearInterval(this.presenceTimer);
    clearInterval(this.heartbeatTimer);
    this.abortLock?.abort();
    this.abortLock = null;
    this.releaseLock?.();
    this.releaseLock = null;
    if (this.channel) {
      this.channel.onmessage = null;
      this.channel.close();
      this.channel = null;
    }
  }

  private receive(message: Message): void {
    if (this.role === 'off' || message.from === this.tabId) return;
    switch (message.type) {
      case 'hello':
        if (this.role !== 'leader') return;
        this.see(message.from, message.visible);
        this.post({
          type: 'welcome',
          to: message.from,
          state: this.currentState,
          auth: authInfo(this.currentAuthError),
          replay: this.replay,
        });
        // The events since the snapshot were too many to keep: a new snapshot catches up.
        if (this.replayOverflowed && this.socket?.state === 'open') this.socket.retryNow();
        return;
      case 'welcome':
        if (message.to !== this.tabId || this.role === 'leader') return;
        this.followLeader(message.from);
        this.setState(message.state, authError(message.auth));
        for (const event of message.replay) this.options.onEvent(event, true);
        return;
      case 'leader':
        this.onLeaderMessage(message.from);
        return;
      case 'claim':
        if (this.role === 'leader')
          this.post({ type: 'leader' }); // still here: no takeover
        else if (this.role === 'candidate' && message.from < this.tabId) this.followLeader(null);
        return;
      case 'presence':
        if (this.role === 'leader') this.see(message.from, message.visible);
        return;
      case 'bye':
        if (this.role === 'leader') {
          this.peers.delete(message.from);
          this.evaluateVisibility();
        } else if (message.from === this.leaderId) {
          this.leaderId = null;
          this.leaderDeadline = this.now(); // claim at the next heartbeat period
        }
        return;
      case 'event':
        if (this.role !== 'leader') this.options.onEvent(message.event);
        return;
      case 'state':
        if (this.role !== 'leader') this.setState(message.state, authError(message.auth));
        return;
      case 'retry':
        if (this.role === 'leader') this.retryNow();
        return;
      case 'unauthorized':
        if (this.role === 'leader') this.markUnauthorized(message.cause);
        return;
    }
  }

  private onLeaderMessage(from: string): void {
    if (this.role === 'leader') {
      // Two leaders after a heartbeat election race: the lower tab id keeps the socket.
      if (!this.heartbeatMode) return; // the lock allows one leader only
      if (from < this.tabId) this.stepDown();
      else this.post({ type: 'leader' });
      return;
    }
    this.followLeader(from);
  }

  /** Follow `from`, or wait for the lower tab id that claimed (`null`) to lead. */
  private followLeader(from: string | null): void {
    if (this.role === 'candidate') this.role = 'follower';
    this.leaderDeadline = this.now() + LEADER_SILENCE_MS;
    if (from === null || from === this.leaderId) return;
    this.leaderId = from;
    // A new leader does not know whether this tab is visible yet.
    this.post({ type: 'presence', visible: this.visible() });
  }

  /** Without Web Locks: the leader beats, a follower watches for silence, a candidate waits. */
  private everyHeartbeat(): void {
    const now = this.now();
    if (this.role === 'leader') {
      this.post({ type: 'leader' });
    } else if (this.role === 'follower' && now >= this.leaderDeadline) {
      this.role = 'candidate';
      this.claimDeadline = now + CLAIM_MS;
      this.post({ type: 'claim' });
    } else if (this.role === 'candidate' && now >= this.claimDeadline) {
      this.becomeLeader();
    }
  }

  private everyPresencePeriod(): void {
    if (this.role === 'leader') this.evaluateVisibility();
    else this.post({ type: 'presence', visible: this.visible() });
  }

  private becomeLeader(): void {
    const signedOut = this.currentState === 'unauthorized' ? this.currentAuthError : null;
    this.role = 'leader';
    this.leaderId = this.tabId;
    this.peers.clear();
    this.post({ type: 'leader' });
    this.startSocket();
    // Signed out stays signed out across a hand-over: only retryNow() reconnects.
    if (signedOut) this.socket?.markUnauthorized(signedOut);
    this.evaluateVisibility();
  }

  private stepDown(): void {
    this.stopSocket();
    this.role = 'follower';
    this.leaderId = null;
    this.leaderDeadline = this.now() + LEADER_SILENCE_MS;
    this.post({ type: 'hello', visible: this.visible() });
  }

  private startSocket(): void {
    this.released = false;
    this.replay = [];
    this.replayOverflowed = false;
    const socket = new NotificationsSocket({
      ...this.options,
      lifecycle: this.lifecycle,
      onEvent: (event) => {
        if (this.socket === socket) this.publishEvent(event);
      },
      onStateChange: (state, error) => {
        if (this.socket === socket && !this.released) this.publishState(state, error);
      },
    });
    this.socket = socket;
    socket.connect();
  }

  /** Close the socket without reporting `closed`: the caller says what the state is. */
  private stopSocket(): void {
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.replay = [];
  }

  private publishEvent(event: ServerEvent): void {
    if (this.role === 'leader') this.keepForReplay(event);
    this.options.onEvent(event);
    this.post({ type: 'event', event }); // no channel in a tab of its own
  }

  private keepForReplay(event: ServerEvent): void {
    if (event.event === 'snapshot') {
      this.replay = [event];
      this.replayOverflowed = false;
    } else if (event.event !== 'keepalive' && this.replay.length > 0) {
      if (this.replay.length < REPLAY_LIMIT) {
        this.replay.push(event);
      } else {
        this.replay = [];
        this.replayOverflowed = true;
      }
    }
  }

  private publishState(state: ConnectionState, error: UnauthorizedError | null): void {
    this.setState(state, error);
    this.post({ type: 'state', state, auth: authInfo(error) });
  }

  private see(tabId: string, visible: boolean): void {
    const shown = visible && !this.peers.get(tabId)?.visible;
    this.peers.set(tabId, { visible, seenAt: this.now() });
    this.evaluateVisibility();
    // As NotificationsSocket does when its own tab is shown: skip the rest of the backoff.
    const state = this.socket?.state;
    if (shown && (state === 'stopped' || state === 'reconnecting' || state === 'offline'))
      this.socket?.retryNow();
  }

  /**
   * The leader lets the socket go once every tab has been hidden for the grace, and takes it
   * back as soon as one is shown.
   */
  private evaluateVisibility(): void {
    if (this.role !== 'leader') return;
    const now = this.now();
    let anyVisible = this.visible();
    for (const [tabId, peer] of this.peers) {
      if (now - peer.seenAt > PEER_TTL_MS)
        this.peers.delete(tabId); // closed without a bye
      else if (peer.visible) anyVisible = true;
    }
    if (anyVisible) {
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
      if (this.released) this.resume();
    } else if (!this.released && this.graceTimer === undefined) {
      this.graceTimer = setTimeout(() => this.release(), this.hiddenGraceMs);
    }
  }

  private release(): void {
    this.graceTimer = undefined;
    // Signed out or a refused origin holds no connection, and must not come back on its own
    // when a tab shows.
    const state = this.socket?.state;
    if (this.role !== 'leader' || state === 'unauthorized' || state === 'forbidden') return;
    if (!this.socket) return;
    this.released = true;
    this.socket.close();
    this.replay = [];
    this.replayOverflowed = false;
    this.publishState('idle', null);
  }

  private resume(): void {
    this.released = false;
    this.socket?.connect();
    this.evaluateVisibility();
  }

  private readonly onVisibilityChange = (): void => {
    if (this.role === 'leader') this.evaluateVisibility();
    else this.post({ type: 'presence', visible: this.visible() });
  };

  /**
   * A tab that goes away leaves at once, so that the next leader need not wait for silence;
   * one restored from the back/forward cache joins again.
   */
  private readonly onPageHide = (): void => {
    if (this.role === 'off' || this.role === 'solo') return;
    this.pageHidden = true;
    this.leave();
  };

  private readonly onPageShow = (event: Event): void => {
    if (!this.pageHidden || !(event as PageTransitionEvent).persisted) return;
    this.pageHidden = false;
    this.join();
  };

  private listenToPage(on: boolean): void {
    if (typeof window === 'undefined' || on === this.pageListening) return;
    this.pageListening = on;
    if (on) {
      window.addEventListener('pagehide', this.onPageHide);
      window.addEventListener('pageshow', this.onPageShow);
    } else {
      window.removeEventListener('pagehide', this.onPageHide);
      window.removeEventListener('pageshow', this.onPageShow);
    }
  }

  private visible(): boolean {
    return this.lifecycle?.isVisible() ?? true;
  }

  private post(body: Body): void {
    this.channel?.postMessage({ ...body, from: this.tabId });
  }

  private setState(state: ConnectionState, authError: UnauthorizedError | null = null): void {
    if (state === this.currentState && authError === this.currentAuthError) return;
    this.currentState = state;
    this.currentAuthError = authError;
    this.options.onStateChange?.(state, authError);
  }
}

function authInfo(error: UnauthorizedError | null): AuthInfo | null {
  return error && { reason: error.reason, message: error.message };
}

function authError(info: AuthInfo | null): UnauthorizedError | null {
  return info && new UnauthorizedError(info.reason, info.message);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function randomId(): string {
  return typeof crypto !== 'undefined' && 'randomUUID' in crypto
    ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function browserChannel(): ((name: string) => BroadcastChannelLike) | undefined {
  if (typeof BroadcastChannel === 'undefined') return undefined;
  return (name) => new BroadcastChannel(name);
}

function browserLocks(): LockManagerLike | null {
  return typeof navigator !== 'undefined' && navigator.locks ? navigator.locks : null;
}
