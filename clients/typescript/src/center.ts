import { NotificationsApi } from './rest.js';
import { NotificationsSocket, type SocketOptions } from './socket.js';
import { NotificationStore } from './store.js';
import type { GetToken } from './types.js';

export interface NotificationCenterOptions {
  baseUrl: string;
  getToken: GetToken;
  fetch?: typeof fetch;
  socket?: Partial<Pick<SocketOptions, 'createWebSocket' | 'lifecycle' | 'random' | 'now'>>;
}

/** Socket, store and REST wired together: what a bell icon needs. */
export class NotificationCenter {
  readonly store = new NotificationStore();
  readonly socket: NotificationsSocket;
  readonly api: NotificationsApi;

  constructor(options: NotificationCenterOptions) {
    this.api = new NotificationsApi(options);
    this.socket = new NotificationsSocket({
      ...options.socket,
      baseUrl: options.baseUrl,
      getToken: options.getToken,
      onEvent: (event) => this.store.apply(event),
      onStateChange: (state) => this.store.setConnection(state),
    });
  }

  connect(): void {
    this.socket.connect();
  }

  close(): void {
    this.socket.close();
  }

  /** Optimistic: the item reads at once, and unreads again if the server refuses. */
  async markRead(id: string): Promise<void> {
    const undo = this.store.markReadLocally([id]);
    try {
      await this.api.markRead(id);
    } catch (error) {
      undo();
      throw error;
    }
  }

  /** Optimistic: the badge drops to 0 at once, and comes back if the server refuses. */
  async markAllRead(): Promise<void> {
    const undo = this.store.markReadLocally('all');
    try {
      await this.api.markAllRead();
    } catch (error) {
      undo();
      throw error;
    }
  }
}
