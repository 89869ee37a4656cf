import { UnauthorizedError } from './socket.js';
import type { ConnectionState, ServerEvent } from './types.js';

/** The part of the browser's BroadcastChannel this client uses (tests pass a fake). */
export interface BroadcastChannelLike {
  onmessage: ((event: MessageEvent) => unknown) | null;
  postMessage(message: unknown): void;
  close(): void;
}

/** An `UnauthorizedError` as it crosses the channel: an Error does not survive the clone. */
export interface AuthInfo {
  reason: UnauthorizedError['reason'];
  message: string;
}

/** What tabs say to each other on the channel. */
export type TabBody =
  | { type: 'hello'; visible: boolean } // joined: the leader answers with `welcome`
  | {
      type: 'welcome';
      to: string;
      state: ConnectionState;
      auth: AuthInfo | null;
      replay: readonly ServerEvent[];
    }
  | { type: 'leader' } // a new leader, or (without Web Locks) its heartbeat
  | { type: 'claim' } // without Web Locks: this tab would lead
  | { type: 'presence'; visible: boolean }
  | { type: 'event'; event: ServerEvent }
  | { type: 'state'; state: ConnectionState; auth: AuthInfo | null }
  | { type: 'retry' }
  | { type: 'unauthorized'; cause: string }
  | { type: 'bye' };
/** Every message also names its sender. */
export type TabMessage = TabBody & { from: string };

/** What an election says, and what it reads: a leader's bye and welcome end a wait for one. */
export type ElectionBody = Extract<TabBody, { type: 'leader' | 'claim' }>;
export type ElectionMessage = Extract<TabMessage, { type: 'leader' | 'claim' | 'bye' | 'welcome' }>;

export function authInfo(error: UnauthorizedError | null): AuthInfo | null {
  return error && { reason: error.reason, message: error.message };
}

export function authError(info: AuthInfo | null): UnauthorizedError | null {
  return info && new UnauthorizedError(info.reason, info.message);
}

export function browserChannel(): ((name: string) => BroadcastChannelLike) | undefined {
  if (typeof BroadcastChannel === 'undefined') return undefined;
  return (name) => new BroadcastChannel(name);
}
