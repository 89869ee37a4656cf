export { NotificationCenter, type NotificationCenterOptions, type SocketLike } from './center.js';
export * from './protocol.js';
export {
  ApiError,
  NotificationsApi,
  type ApiOptions,
  type BulkOptions,
  type BulkResult,
  type DeleteAllOptions,
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
export {
  NotificationStore,
  REMOVED_MEMORY,
  SNAPSHOT_SIZE,
  type BulkScope,
  type ItemChange,
  type NotificationState,
  type OptimisticChange,
  type OptimisticRead,
  type StoreOptions,
  type ViewPaging,
  type ViewState,
} from './store.js';
export type {
  BulkChange,
  BulkFilter,
  ConnectionState,
  Counts,
  GetToken,
  NotificationItem,
  NotificationType,
  ServerEvent,
  TypeCounts,
} from './types.js';
export { inView, ofTypes, viewKey, VIEWS, type ViewFilter } from './views.js';
