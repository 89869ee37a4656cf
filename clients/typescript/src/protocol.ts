/**
 * The socket's path and the close codes of Campana's wire format (docs/protocol.md).
 * The server's `src/campana/protocol.py` holds the same values; a server test checks that
 * both agree, so change them together.
 */

import type { NotificationType } from './types.js';

export const SOCKET_PATH = '/api/v1/notifications/ws';

/** Sent by the client itself when it closes. */
export const CLOSE_NORMAL = 1000;
export const CLOSE_INVALID_DATA = 1007;
export const CLOSE_POLICY_VIOLATION = 1008;
export const CLOSE_INTERNAL_ERROR = 1011;
export const CLOSE_SERVICE_RESTART = 1012;
export const CLOSE_TRY_AGAIN_LATER = 1013;
export const CLOSE_TOKEN_REFUSED = 4401;
export const CLOSE_ORIGIN_REFUSED = 4403;
export const CLOSE_TOO_MANY_SOCKETS = 4429;

/**
 * Every notification type, in the server's order (the event names are in `ServerEvent`,
 * types.ts). The server's test compares every one-line `export const NAME = value;` of this
 * file with `protocol.py`'s path and close codes: a list like this one is left out of it.
 */
export const NOTIFICATION_TYPES = [
  'GENERIC_INFO',
  'TEMPLATE_APPROVED',
  'TEMPLATE_REJECTED',
  'CAMPAIGN_SCHEDULED',
  'CAMPAIGN_SENDING',
  'CAMPAIGN_COMPLETED',
  'CAMPAIGN_ERROR',
] as const satisfies readonly NotificationType[];
