export { NotificationCenter, type NotificationCenterOptions, type SocketLike } from './center.js';
export * from './protocol.js';
export {
  ApiError,
  NotificationsApi,
  type ApiOptions,
  type NotificationPage,
  type PageQuery,
} from './rest.js';
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
export {
  HIDDEN_GRACE_MS,
  REPLAY_LIMIT,
  SharedSocket,
  type BroadcastChannelLike,
  type LockManagerLike,
  type SharedSocketOptions,
} from './shared.js';
export {
  renewLeadMs,
  SignedOutError,
  TOKEN_TIMEOUT_MS,
  tokenExpiry,
  type TokenExpiry,
} from './token.js';
export { NotificationStore, type NotificationState, type OptimisticRead } from './store.js';
export type {
  ConnectionState,
  GetToken,
  NotificationItem,
  NotificationType,
  ServerEvent,
} from './types.js';
