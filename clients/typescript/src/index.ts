export { NotificationCenter, type NotificationCenterOptions } from './center.js';
export * from './protocol.js';
export { ApiError, NotificationsApi, type ApiOptions } from './rest.js';
export {
  BACKOFF_MS,
  KEEPALIVE_MS,
  NotificationsSocket,
  silenceLimitMs,
  UnauthorizedError,
  type PageLifecycle,
  type SocketOptions,
  type WebSocketFactory,
  type WebSocketLike,
} from './socket.js';
export { NotificationStore, type NotificationState, type OptimisticRead } from './store.js';
export type {
  ConnectionState,
  GetToken,
  NotificationItem,
  NotificationType,
  ServerEvent,
} from './types.js';
