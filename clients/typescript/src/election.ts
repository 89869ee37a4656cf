import type { ElectionBody, ElectionMessage } from './tab-messages.js';

/** The part of `navigator.locks` this client uses (tests pass a fake). */
export interface LockManagerLike {
  request(
    name: string,
    options: { mode: 'exclusive'; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown>;
}

/** Without Web Locks: the leader's heartbeat period, and the silence that ends its term. */
export const HEARTBEAT_MS = 250;
export const LEADER_SILENCE_MS = 1_000;
/** Without Web Locks: how long a claim waits for a leader or a lower tab id to object. */
export const CLAIM_MS = 250;

/** What an election needs of its tab, and what it tells it. */
export interface ElectionHost {
  readonly tabId: string;
  now(): number;
  post(body: ElectionBody): void;
  /** This tab leads from now on: it opens the socket. */
  elected(): void;
  /** This tab leads no more (two leaders after a heartbeat race): it lets the socket go. */
  deposed(): void;
  /** Another tab leads now, one this tab did not follow before. */
  followed(leaderId: string): void;
}

/** Which tab of the group holds the socket. One election per join: `stop()` ends it for good. */
export interface Election {
  readonly leading: boolean;
  start(): void;
  /** Give the lead or the wait for it up, and every timer with it. */
  stop(): void;
  /** Another tab's `leader`, `claim`, `bye`, or a `welcome` addressed to this tab. */
  receive(message: ElectionMessage): void;
}

/**
 * Web Locks: the tab holding the group's lock leads until it leaves (or closes: the browser
 * lets the lock go then), and the next tab in line is granted it at once.
 */
export class LocksElection implements Election {
  private phase: 'waiting' | 'leading' | 'stopped' = 'waiting';
  private leaderId: string | null = null;
  private abort: AbortController | null = null;
  private releaseLock: (() => void) | null = null;

  /** `refused`: the browser refused the lock (not aborted by `stop()`). */
  constructor(
    private readonly locks: LockManagerLike,
    private readonly name: string,
    private readonly host: ElectionHost,
    private readonly refused: () => void,
  ) {}

  get leading(): boolean {
    return this.phase === 'leading';
  }

  start(): void {
    const abort = new AbortController();
    this.abort = abort;
    this.locks
      .request(this.name, { mode: 'exclusive', signal: abort.signal }, () => {
        if (this.phase === 'stopped') return Promise.resolve();
        this.abort = null;
        return new Promise<void>((resolve) => {
          this.releaseLock = resolve;
          this.phase = 'leading';
          this.leaderId = this.host.tabId;
          this.host.post({ type: 'leader' });
          this.host.elected();
        });
      })
      .catch(() => {
        // Aborted by stop(); or refused (a sandboxed frame, a document not fully active).
        if (this.phase === 'stopped' || abort.signal.aborted) return;
        this.abort = null;
        this.refused();
      });
  }

  stop(): void {
    this.phase = 'stopped';
    this.abort?.abort();
    this.abort = null;
    this.releaseLock?.();
    this.releaseLock = null;
  }

  receive(message: ElectionMessage): void {
    switch (message.type) {
      case 'leader':
      case 'welcome':
        // The lock allows one leader only: a leader's own term is not in question.
        if (!this.leading) this.follow(message.from);
        return;
      case 'claim':
        // A tab without Web Locks would lead: this one still does.
        if (this.leading) this.host.post({ type: 'leader' });
        return;
      case 'bye':
        if (!this.leading && message.from === this.leaderId) this.leaderId = null;
        return;
      default: {
        const unreachable: never = message;
        return unreachable;
      }
    }
  }

  private follow(leaderId: string): void {
    if (leaderId === this.leaderId) return;
    this.leaderId = leaderId;
    this.host.followed(leaderId);
  }
}

/**
 * Without Web Locks, heartbeats over the channel: the leader beats every `HEARTBEAT_MS`; a
 * follower that hears no leader for `LEADER_SILENCE_MS` claims the lead, and takes it unless
 * a leader or a lower tab id objects within `CLAIM_MS`. Two leaders after a race (the channel
 * lost their claims) meet at their next beats: the higher tab id steps down.
 */
export class HeartbeatElection implements Election {
  private phase: 'follower' | 'candidate' | 'leader' | 'stopped' = 'follower';
  private leaderId: string | null = null;
  private leaderDeadline = 0;
  private claimDeadline = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly host: ElectionHost) {}

  get leading(): boolean {
    return this.phase === 'leader';
  }

  start(): void {
    // A leader answers a hello at once: one heartbeat period of silence means none.
    this.leaderDeadline = this.host.now() + HEARTBEAT_MS;
    this.timer = setInterval(() => this.beat(), HEARTBEAT_MS);
  }

  stop(): void {
    this.phase = 'stopped';
    clearInterval(this.timer);
  }

  receive(message: ElectionMessage): void {
    if (this.phase === 'stopped') return;
    switch (message.type) {
      case 'leader':
        if (!this.leading) this.follow(message.from);
        // Two leaders after a race: the lower tab id keeps the socket.
        else if (message.from < this.host.tabId) this.stepDown();
        else this.host.post({ type: 'leader' });
        return;
      case 'welcome':
        if (!this.leading) this.follow(message.from);
        return;
      case 'claim':
        if (this.leading)
          this.host.post({ type: 'leader' }); // still here: no takeover
        else if (this.phase === 'candidate' && message.from < this.host.tabId) this.follow(null);
        return;
      case 'bye':
        if (this.leading || message.from !== this.leaderId) return;
        this.leaderId = null;
        this.leaderDeadline = this.host.now(); // claim at the next heartbeat
        return;
      default: {
        const unreachable: never = message;
        return unreachable;
      }
    }
  }

  /** Follow `leaderId`, or wait for the lower tab id that claimed (`null`) to lead. */
  private follow(leaderId: string | null): void {
    if (this.phase === 'candidate') this.phase = 'follower';
    this.leaderDeadline = this.host.now() + LEADER_SILENCE_MS;
    if (leaderId === null || leaderId === this.leaderId) return;
    this.leaderId = leaderId;
    this.host.followed(leaderId);
  }

  /** The leader beats, a follower watches for silence, a candidate waits for objections. */
  private beat(): void {
    const now = this.host.now();
    switch (this.phase) {
      case 'leader':
        this.host.post({ type: 'leader' });
        return;
      case 'follower':
        if (now < this.leaderDeadline) return;
        this.phase = 'candidate';
        this.claimDeadline = now + CLAIM_MS;
        this.host.post({ type: 'claim' });
        return;
      case 'candidate':
        if (now >= this.claimDeadline) this.lead();
        return;
      case 'stopped':
        return;
      default: {
        const unreachable: never = this.phase;
        return unreachable;
      }
    }
  }

  private lead(): void {
    this.phase = 'leader';
    this.leaderId = this.host.tabId;
    this.host.post({ type: 'leader' });
    this.host.elected();
  }

  private stepDown(): void {
    this.phase = 'follower';
    this.leaderId = null;
    this.leaderDeadline = this.host.now() + LEADER_SILENCE_MS;
    this.host.deposed();
  }
}

export function browserLocks(): LockManagerLike | null {
  return typeof navigator !== 'undefined' && navigator.locks ? navigator.locks : null;
}
