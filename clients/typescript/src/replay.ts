import type { ServerEvent } from './types.js';

/**
 * The events the leader keeps after the latest snapshot, to replay to a tab that joins.
 * Past it the replay is dropped, and the next tab that joins makes the leader reconnect:
 * the new snapshot catches every tab up.
 */
export const REPLAY_LIMIT = 1_000;

type Kept =
  | { kind: 'none' } // no snapshot since the socket opened: nothing worth replaying
  | { kind: 'since_snapshot'; events: ServerEvent[] }
  | { kind: 'overflowed' };

/**
 * What the leader replays to a tab that joins: the latest snapshot and the events after it.
 * Applying them twice is harmless: the store keys items by id.
 */
export class Replay {
  private kept: Kept = { kind: 'none' };

  get events(): readonly ServerEvent[] {
    return this.kept.kind === 'since_snapshot' ? this.kept.events : [];
  }

  /** Too many events since the snapshot to keep: a tab that joins needs a new snapshot. */
  get overflowed(): boolean {
    return this.kept.kind === 'overflowed';
  }

  keep(event: ServerEvent): void {
    if (event.event === 'snapshot') {
      this.kept = { kind: 'since_snapshot', events: [event] };
      return;
    }
    if (event.event === 'keepalive' || this.kept.kind !== 'since_snapshot') return;
    if (this.kept.events.length < REPLAY_LIMIT) this.kept.events.push(event);
    else this.kept = { kind: 'overflowed' };
  }

  clear(): void {
    this.kept = { kind: 'none' };
  }
}
