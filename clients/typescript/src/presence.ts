/** Followers repeat their visibility this often; the leader forgets a tab silent thrice as long. */
export const PRESENCE_MS = 5_000;
const PEER_TTL_MS = 3 * PRESENCE_MS;

/**
 * The leader's view of which tabs of the group are visible, and the grace it waits, once
 * none is, before it lets the socket go.
 */
export class Presence {
  private readonly peers = new Map<string, { visible: boolean; seenAt: number }>();
  private graceTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly graceMs: number,
    private readonly now: () => number,
  ) {}

  /** A tab's hello or presence; true when that tab has just been shown. */
  see(tabId: string, visible: boolean): boolean {
    const shown = visible && !this.peers.get(tabId)?.visible;
    this.peers.set(tabId, { visible, seenAt: this.now() });
    return shown;
  }

  forget(tabId: string): void {
    this.peers.delete(tabId);
  }

  /** Whether the leader's own tab (`ownVisible`) or another one is visible. */
  anyVisible(ownVisible: boolean): boolean {
    const now = this.now();
    let anyVisible = ownVisible;
    for (const [tabId, peer] of this.peers) {
      if (now - peer.seenAt > PEER_TTL_MS)
        this.peers.delete(tabId); // closed without a bye
      else if (peer.visible) anyVisible = true;
    }
    return anyVisible;
  }

  /** Call `expired` once the grace has passed; a grace already running goes on. */
  startGrace(expired: () => void): void {
    if (this.graceTimer !== undefined) return;
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined;
      expired();
    }, this.graceMs);
  }

  cancelGrace(): void {
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }

  /** Forget every tab and the grace: a new leader learns of the tabs from what they say. */
  reset(): void {
    this.cancelGrace();
    this.peers.clear();
  }
}
