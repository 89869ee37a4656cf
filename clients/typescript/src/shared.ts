import {
  browserLocks,
  type Election,
  type ElectionHost,
  HeartbeatElection,
  type LockManagerLike,
  LocksElection,
} from './election.js';
import { Presence, PRESENCE_MS } from './presence.js';
import { Replay } from './replay.js';
import {
  browserLifecycle,
  NotificationsSocket,
  type PageLifecycle,
  type SocketOptions,
  type UnauthorizedError,
} from './socket.js';
import {
  authError,
  authInfo,
  type BroadcastChannelLike,
  browserChannel,
  type TabBody,
  type TabMessage,
} from './tab-messages.js';
import type { ConnectionState, ServerEvent } from './types.js';

export type { LockManagerLike } from './election.js';
export { REPLAY_LIMIT } from './replay.js';
export type { BroadcastChannelLike } from './tab-messages.js';

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
 * Where this tab stands, in one value so that no two flags can disagree:
 * - `closed`: before `connect()`, after `close()`; nothing listens, nothing is open;
 * - `away`: left the group at pagehide; pageshow from the back/forward cache joins again;
 * - `solo`: without `BroadcastChannel`, this tab's own socket;
 * - `joined`: in the group, leading or following as the election says;
 * - `released`: leading, with the socket let go because every tab has been hidden.
 */
type Activity = 'closed' | 'away' | 'solo' | 'joined' | 'released';

/**
 * One socket for every tab of a browser that shows the same user of the same server: a
 * drop-in for `NotificationsSocket`.
 *
 * The tabs elect a leader (`election.ts`), with Web Locks where the browser has them and with
 * heartbeats over the channel where it has not. The leader alone holds a
 * `NotificationsSocket`; it passes every event and state change to the other tabs, and
 * replays the latest snapshot and the events after it to a tab that joins (`replay.ts`). A
 * new leader opens its own socket, whose snapshot catches every tab up. When every tab has
 * been hidden for `hiddenGraceMs` (`presence.ts`), the leader closes the socket and the state
 * is `idle`; the first tab to be shown again reconnects it.
 *
 * Without `BroadcastChannel` (or `createChannel`), each tab simply has its own socket.
 */
export class SharedSocket {
  private activity: Activity = 'closed';
  private currentState: ConnectionState = 'idle';
  private currentAuthError: UnauthorizedError | null = null;
  private readonly tabId: string;
  private readonly now: () => number;
  private lifecycle: PageLifecycle | undefined;
  private channel: BroadcastChannelLike | null = null;
  private election: Election | null = null;
  private presenceTimer: ReturnType<typeof setInterval> | undefined;
  // The leader's, or this tab's own without a channel.
  private socket: NotificationsSocket | null = null;
  private readonly replay = new Replay();
  private readonly presence: Presence;

  constructor(private readonly options: SharedSocketOptions) {
    this.tabId = options.tabId ?? randomId();
    this.now = options.now ?? Date.now;
    this.presence = new Presence(options.hiddenGraceMs ?? HIDDEN_GRACE_MS, this.now);
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
    if (this.activity === 'closed') this.listenToPage(true);
    else if (this.activity !== 'away') return;
    this.join();
  }

  /** Leave the group for good: no events or reconnects until `connect()` is called again. */
  close(): void {
    this.listenToPage(false);
    this.leave('closed');
    this.setState('closed');
  }

  /** Reconnect now, skipping the backoff; a follower asks the leader to. */
  retryNow(): void {
    if (this.activity === 'released') this.resume();
    else if (this.holdsSocket()) this.socket?.retryNow();
    else if (this.activity === 'joined') this.post({ type: 'retry' });
  }

  /** Stop in `unauthorized` (REST saw a fresh token refused); a follower asks the leader to. */
  markUnauthorized(cause: unknown): void {
    if (this.holdsSocket()) this.socket?.markUnauthorized(cause);
    else if (this.activity === 'joined')
      this.post({ type: 'unauthorized', cause: describe(cause) });
  }

  private get leading(): boolean {
    return this.election?.leading ?? false;
  }

  /** The leader, or a tab of its own: the one with a `NotificationsSocket`. */
  private holdsSocket(): boolean {
    return this.activity === 'solo' || this.leading;
  }

  private join(): void {
    this.lifecycle = this.options.lifecycle ?? browserLifecycle();
    const createChannel = this.options.createChannel ?? browserChannel();
    if (!createChannel) {
      this.activity = 'solo';
      this.startSocket();
      return;
    }
    this.activity = 'joined';
    this.setState('connecting');
    const channel = createChannel(this.options.channelName);
    this.channel = channel;
    channel.onmessage = (message) => this.receive(message.data as TabMessage);
    this.lifecycle?.addEventListener('visibilitychange', this.shareVisibility);
    this.presenceTimer = setInterval(this.shareVisibility, PRESENCE_MS);
    this.post({ type: 'hello', visible: this.visible() });
    const locks = this.options.locks !== undefined ? this.options.locks : browserLocks();
    const host = this.electionHost();
    this.startElection(
      locks
        ? new LocksElection(locks, this.options.channelName, host, () =>
            // Refused: the heartbeat elects, rather than leave the tab without a socket.
            this.startElection(new HeartbeatElection(host)),
          )
        : new HeartbeatElection(host),
    );
  }

  private startElection(election: Election): void {
    this.election = election;
    election.start();
  }

  private leave(next: 'closed' | 'away'): void {
    this.stopSocket();
    this.post({ type: 'bye' }); // no channel in a tab of its own
    this.activity = next;
    this.election?.stop();
    this.election = null;
    this.lifecycle?.removeEventListener('visibilitychange', this.shareVisibility);
    clearInterval(this.presenceTimer);
    if (this.channel) {
      this.channel.onmessage = null;
      this.channel.close();
      this.channel = null;
    }
  }

  private receive(message: TabMessage): void {
    if (!this.election || message.from === this.tabId) return;
    if (this.leading) this.receiveAsLeader(message, this.election);
    else this.receiveAsFollower(message, this.election);
  }

  private receiveAsLeader(message: TabMessage, election: Election): void {
    switch (message.type) {
      case 'hello':
        this.see(message.from, message.visible);
        this.post({
          type: 'welcome',
          to: message.from,
          state: this.currentState,
          auth: authInfo(this.currentAuthError),
          replay: this.replay.events,
        });
        // The events since the snapshot were too many to keep: a new snapshot catches up.
        if (this.replay.overflowed && this.socket?.state === 'open') this.socket.retryNow();
        return;
      case 'presence':
        this.see(message.from, message.visible);
        return;
      case 'bye':
        this.presence.forget(message.from);
        this.evaluateVisibility();
        return;
      case 'retry':
        this.retryNow();
        return;
      case 'unauthorized':
        this.markUnauthorized(message.cause);
        return;
      case 'leader':
      case 'claim':
        election.receive(message);
        return;
      case 'welcome':
      case 'event':
      case 'state':
        return; // a leader's words to its followers
      default: {
        const unreachable: never = message;
        return unreachable;
      }
    }
  }

  private receiveAsFollower(message: TabMessage, election: Election): void {
    switch (message.type) {
      case 'welcome':
        if (message.to !== this.tabId) return;
        election.receive(message);
        this.setState(message.state, authError(message.auth));
        for (const event of message.replay) this.options.onEvent(event, true);
        return;
      case 'event':
        this.options.onEvent(message.event);
        return;
      case 'state':
        this.setState(message.state, authError(message.auth));
        return;
      case 'leader':
      case 'claim':
      case 'bye':
        election.receive(message);
        return;
      case 'hello':
      case 'presence':
      case 'retry':
      case 'unauthorized':
        return; // for the leader
      default: {
        const unreachable: never = message;
        return unreachable;
      }
    }
  }

  private electionHost(): ElectionHost {
    return {
      tabId: this.tabId,
      now: this.now,
      post: (body) => this.post(body),
      elected: () => this.lead(),
      deposed: () => {
        this.stopSocket();
        this.activity = 'joined';
        this.post({ type: 'hello', visible: this.visible() });
      },
      // A new leader does not know whether this tab is visible yet.
      followed: () => this.post({ type: 'presence', visible: this.visible() }),
    };
  }

  private lead(): void {
    const signedOut = this.currentState === 'unauthorized' ? this.currentAuthError : null;
    this.presence.reset();
    this.startSocket();
    // Signed out stays signed out across a hand-over: only retryNow() reconnects.
    if (signedOut) this.socket?.markUnauthorized(signedOut);
    this.evaluateVisibility();
  }

  private startSocket(): void {
    this.replay.clear();
    const socket = new NotificationsSocket({
      ...this.options,
      lifecycle: this.lifecycle,
      onEvent: (event) => {
        if (this.socket === socket) this.publishEvent(event);
      },
      onStateChange: (state, error) => {
        if (this.socket === socket && this.activity !== 'released') this.publishState(state, error);
      },
    });
    this.socket = socket;
    socket.connect();
  }

  /** Close the socket without reporting `closed`: the caller says what the state is. */
  private stopSocket(): void {
    this.presence.cancelGrace();
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.replay.clear();
  }

  private publishEvent(event: ServerEvent): void {
    if (this.leading) this.replay.keep(event);
    this.options.onEvent(event);
    this.post({ type: 'event', event }); // no channel in a tab of its own
  }

  private publishState(state: ConnectionState, error: UnauthorizedError | null): void {
    this.setState(state, error);
    this.post({ type: 'state', state, auth: authInfo(error) });
  }

  private see(tabId: string, visible: boolean): void {
    const shown = this.presence.see(tabId, visible);
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
    if (!this.leading) return;
    if (this.presence.anyVisible(this.visible())) {
      this.presence.cancelGrace();
      if (this.activity === 'released') this.resume();
    } else if (this.activity !== 'released') {
      this.presence.startGrace(() => this.release());
    }
  }

  private release(): void {
    // Signed out or a refused origin holds no connection, and must not come back on its own
    // when a tab shows.
    const state = this.socket?.state;
    if (!this.leading || state === 'unauthorized' || state === 'forbidden') return;
    if (!this.socket) return;
    this.activity = 'released';
    this.socket.close();
    this.replay.clear();
    this.publishState('idle', null);
  }

  private resume(): void {
    this.activity = 'joined';
    this.socket?.connect();
    this.evaluateVisibility();
  }

  /** On visibilitychange and every presence period. */
  private readonly shareVisibility = (): void => {
    if (this.leading) this.evaluateVisibility();
    else this.post({ type: 'presence', visible: this.visible() });
  };

  /**
   * A tab that goes away leaves at once, so that the next leader need not wait for silence;
   * one restored from the back/forward cache joins again.
   */
  private readonly onPageHide = (): void => {
    if (this.activity === 'joined' || this.activity === 'released') this.leave('away');
  };

  private readonly onPageShow = (event: Event): void => {
    if (this.activity === 'away' && (event as PageTransitionEvent).persisted) this.join();
  };

  private listenToPage(on: boolean): void {
    if (typeof window === 'undefined') return;
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

  private post(body: TabBody): void {
    this.channel?.postMessage({ ...body, from: this.tabId });
  }

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

function randomId(): string {
  return typeof crypto !== 'undefined' && 'randomUUID' in crypto
    ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
