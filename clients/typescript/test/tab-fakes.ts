import type { BroadcastChannelLike, LockManagerLike } from '../src/shared.js';

/**
 * BroadcastChannels of several tabs in one test: like the real ones, a message is cloned
 * and delivered later (a timer task), to every other open channel of the same name.
 */
export class FakeChannelHub {
  private readonly channels = new Set<FakeChannel>();
  /** Tab ids whose messages are lost, as if the tab had frozen or crashed. */
  readonly muted = new Set<string>();

  readonly create = (name: string): FakeChannel => {
    const channel = new FakeChannel(name, this);
    this.channels.add(channel);
    return channel;
  };

  deliver(sender: FakeChannel, message: unknown): void {
    const from = (message as { from?: string }).from;
    if (from !== undefined && this.muted.has(from)) return;
    for (const channel of this.channels) {
      if (channel === sender || channel.name !== sender.name) continue;
      const copy = structuredClone(message);
      setTimeout(() => {
        if (!channel.closed) channel.onmessage?.({ data: copy } as MessageEvent);
      }, 0);
    }
  }

  remove(channel: FakeChannel): void {
    this.channels.delete(channel);
  }
}

export class FakeChannel implements BroadcastChannelLike {
  onmessage: BroadcastChannelLike['onmessage'] = null;
  closed = false;

  constructor(
    readonly name: string,
    private readonly hub: FakeChannelHub,
  ) {}

  postMessage(message: unknown): void {
    if (this.closed) throw new Error('posted to a closed channel');
    this.hub.deliver(this, message);
  }

  close(): void {
    this.closed = true;
    this.hub.remove(this);
  }
}

interface LockRequest {
  callback: (lock: unknown) => Promise<void>;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
}

/** Exclusive Web Locks: one holder per name, the others queue in order; a signal aborts a wait. */
export class FakeLockManager implements LockManagerLike {
  private readonly queues = new Map<string, LockRequest[]>();
  private readonly held = new Set<string>();

  isHeld(name: string): boolean {
    return this.held.has(name);
  }

  waiting(name: string): number {
    return this.queues.get(name)?.length ?? 0;
  }

  request(
    name: string,
    options: { mode: 'exclusive'; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const request: LockRequest = { callback, resolve, reject };
      const queue = this.queues.get(name) ?? [];
      this.queues.set(name, queue);
      options.signal?.addEventListener('abort', () => {
        const index = queue.indexOf(request);
        if (index < 0) return; // granted already: aborting no longer matters
        queue.splice(index, 1);
        reject(new DOMException('the request was aborted', 'AbortError'));
      });
      queue.push(request);
      this.grantNext(name);
    });
  }

  private grantNext(name: string): void {
    if (this.held.has(name)) return;
    const request = this.queues.get(name)?.shift();
    if (!request) return;
    this.held.add(name);
    setTimeout(() => {
      request
        .callback({ name, mode: 'exclusive' })
        .then(request.resolve, request.reject)
        .finally(() => {
          this.held.delete(name);
          this.grantNext(name);
        });
    }, 0);
  }
}
