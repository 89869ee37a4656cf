import type { GetToken } from './types.js';

/**
 * What `getToken` throws (or the `null` it returns means) when nobody is signed in: the
 * connection stops in `unauthorized` until `retryNow()`. Anything else `getToken` throws
 * (a network error, a 5xx, a timeout) is a passing fault, retried with the socket's backoff.
 */
export class SignedOutError extends Error {
  constructor(message = 'signed out', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SignedOutError';
  }
}

/** Whether `error` says "signed out"; by name too, for a second copy of this package. */
export function isSignedOut(error: unknown): boolean {
  return (
    error instanceof SignedOutError || (error instanceof Error && error.name === 'SignedOutError')
  );
}

/** How long `getToken` may take before the attempt counts as failed (and is retried). */
export const TOKEN_TIMEOUT_MS = 10_000;

/** When a token ends, read from its claims; the signature is the server's business. */
export interface TokenExpiry {
  /** The `exp` claim, in seconds. */
  exp: number;
  /** When it ends on this page's clock, in ms. */
  expiresAt: number;
  /** How long it lasts from when it was received, in ms. */
  lifetime: number;
}

/**
 * The token's `exp`, as this page's clock counts it; `null` when it has none (the server
 * refuses such a token). With `iat` the lifetime is `exp - iat` from `receivedAt`, so a page
 * whose clock is off still renews on time; without it, `exp` is read on the page's clock.
 */
export function tokenExpiry(token: string, receivedAt: number): TokenExpiry | null {
  const claims = tokenClaims(token);
  const exp = claims?.exp;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return null;
  const iat = claims?.iat;
  if (typeof iat === 'number' && iat < exp) {
    const lifetime = (exp - iat) * 1000;
    return { exp, expiresAt: receivedAt + lifetime, lifetime };
  }
  return { exp, expiresAt: exp * 1000, lifetime: exp * 1000 - receivedAt };
}

/**
 * How long before its end a token is renewed: a minute, or half its life when it lasts less
 * than two. That leaves time for a token endpoint that fails a few times (the backoff's 1 s,
 * 2 s and 5 s steps fit in 10 s of a 20 s token) without renewing much more often.
 */
export function renewLeadMs(lifetimeMs: number): number {
  return Math.min(60_000, lifetimeMs / 2);
}

/** The JWT's payload, decoded; `null` when it is not a JWT. */
export function tokenClaims(token: string): Record<string, unknown> | null {
  const part = token.split('.')[1];
  if (!part || typeof atob !== 'function') return null;
  try {
    const binary = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims === 'object' && claims !== null
      ? (claims as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** A token held this much longer is reused rather than fetched again. */
const REUSE_MARGIN_MS = 10_000;

/**
 * `getToken` with the last token kept while it lasts: a REST call then goes out at once,
 * inside the click that made it, so that a link's navigation cannot beat it to the network.
 * `refresh: true` always asks `getToken`.
 */
export class TokenCache {
  private held: { token: string; expiry: TokenExpiry | null } | null = null;

  constructor(
    private readonly getToken: GetToken,
    private readonly now: () => number = Date.now,
  ) {}

  get: GetToken = async ({ refresh }) => {
    const held = this.held;
    if (!refresh && held?.expiry && held.expiry.expiresAt - this.now() > REUSE_MARGIN_MS) {
      return held.token;
    }
    const token = await this.getToken({ refresh });
    this.held = token === null ? null : { token, expiry: tokenExpiry(token, this.now()) };
    return token;
  };
}
