/**
 * The demo notification centre that `campana serve` shows at `/`: a bell in the header that
 * opens a feed, the way GitHub's and Knock's bells work. Every tab of the browser signed in
 * as the same user shares one socket (`SharedSocket`).
 *
 * Query parameters: `token` (the user's JWT; without it the page asks for one), or
 * `token_url` (an endpoint that answers a JWT as text, as an app's backend does: 401 or 403
 * means signed out, any other failure is retried) with `user` (who it signs in, for the
 * socket shared by the tabs); and `keepalive` (the server's `CAMPANA_KEEPALIVE_SECONDS`, 25
 * by default; the page counts the connection dead after two keepalives and a margin without
 * a frame), e.g. `/?token=eyJ…&keepalive=2`.
 */
import './style.css';

import { NotificationCenter } from '../src/center.js';
import { SharedSocket } from '../src/shared.js';
import type { NotificationState } from '../src/store.js';
import type {
  ConnectionState,
  GetToken,
  NotificationItem,
  NotificationType,
} from '../src/types.js';

// Plain glyphs in coloured discs: they render with any font, emoji or not.
const ICONS: Record<NotificationType, [glyph: string, tone: string]> = {
  GENERIC_INFO: ['i', 'info'],
  TEMPLATE_APPROVED: ['✓', 'good'],
  TEMPLATE_REJECTED: ['✕', 'bad'],
  CAMPAIGN_SCHEDULED: ['◷', 'plan'],
  CAMPAIGN_SENDING: ['➤', 'busy'],
  CAMPAIGN_COMPLETED: ['⚑', 'good'],
  CAMPAIGN_ERROR: ['!', 'bad'],
};

const BELL = `<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true" focusable="false"><path fill="currentColor" d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"/></svg>`;

const STATES: Record<ConnectionState, string> = {
  idle: 'Paused',
  connecting: 'Connecting…',
  open: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  stopped: 'Stopped by the server',
  forbidden: 'Origin not allowed',
  unauthorized: 'Signed out',
  closed: 'Closed',
};

/** What the live region says when the connection changes; silence for the others. */
const ANNOUNCED_STATES: Partial<Record<ConnectionState, string>> = {
  open: 'Live: new notifications arrive as they happen.',
  reconnecting: 'Connection lost. Reconnecting…',
  offline: 'Offline. Reconnecting when the network is back.',
  stopped: 'The server stopped this connection.',
  forbidden: 'The server does not allow this site.',
  unauthorized: 'Signed out.',
};

/** States on the way to a snapshot: the empty list means "not yet", not "none". */
const WAITING: ConnectionState[] = ['idle', 'connecting', 'reconnecting'];

const app = document.querySelector<HTMLDivElement>('#app');
if (!app) throw new Error('#app is missing');

const params = new URLSearchParams(location.search);
const token = params.get('token');
const tokenUrl = params.get('token_url');
const keepalive = keepaliveMs(params.get('keepalive'));
if (tokenUrl) showCentre(app, fromEndpoint(tokenUrl), params.get('user') ?? '', keepalive);
else if (token) showCentre(app, fromQuery(token), subjectOf(token), keepalive);
else showTokenForm(app);

/** Where the page's tokens come from, and how another one is put in place. */
interface TokenSource {
  getToken: GetToken;
  /** A token pasted in the signed-out form; `null` when the page cannot take one. */
  use: ((token: string) => void) | null;
}

/** The token of the address, or one pasted later. */
function fromQuery(first: string): TokenSource {
  let jwt = first;
  return {
    getToken: () => jwt,
    use: (next) => {
      jwt = next;
    },
  };
}

/**
 * The token endpoint of an app's backend: the getToken of the client's README. 401 and 403
 * mean signed out (`null`); a network error or any other status throws, and is retried.
 */
function fromEndpoint(url: string): TokenSource {
  return {
    getToken: async ({ refresh }) => {
      const address = new URL(url, location.href);
      if (refresh) address.searchParams.set('refresh', '1');
      const response = await fetch(address);
      if (response.status === 401 || response.status === 403) return null;
      if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
      return response.text();
    },
    use: null,
  };
}

function keepaliveMs(seconds: string | null): number | undefined {
  const value = Number(seconds);
  return seconds && Number.isFinite(value) && value > 0 ? value * 1000 : undefined;
}

function showTokenForm(root: HTMLElement): void {
  root.innerHTML = `
    <main class="sign-in">
      <h1>${BELL} Campana</h1>
      <p>Paste a token (<code>campana token demo</code> prints one) to open the notification centre.</p>
      <form>
        <label for="first-token">Token</label>
        <input id="first-token" name="token" placeholder="eyJhbGciOi…" autocomplete="off" required />
        <button type="submit">Open</button>
      </form>
    </main>`;
  root.querySelector('form')?.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = new FormData(event.target as HTMLFormElement).get('token');
    if (typeof value === 'string' && value.trim())
      location.search = `?token=${encodeURIComponent(value.trim())}`;
  });
}

type Filter = 'all' | 'unread';

function showCentre(
  root: HTMLElement,
  tokens: TokenSource,
  user: string,
  keepalive: number | undefined,
): void {
  root.innerHTML = `
    <header class="top">
      <h1>${BELL} Campana</h1>
      <span class="user"></span>
      <span class="connection" data-testid="connection"></span>
      <div class="bell-anchor">
        <button type="button" class="bell" data-testid="bell" aria-expanded="false" aria-controls="feed">${BELL}<span class="badge" data-testid="badge" aria-hidden="true" hidden></span></button>
        <section id="feed" class="popover" aria-labelledby="feed-title" hidden>
          <div class="popover-head">
            <h2 id="feed-title">Notifications</h2>
            <button type="button" class="read-all" data-testid="read-all">Mark all read</button>
          </div>
          <div class="filters" role="group" aria-label="Show">
            <button type="button" class="filter" data-filter="all" data-testid="filter-all" aria-pressed="true">All</button>
            <button type="button" class="filter" data-filter="unread" data-testid="filter-unread" aria-pressed="false">Unread</button>
          </div>
          <p class="error" role="alert" data-testid="error" hidden></p>
          <div class="feed-scroll">
            <ul class="list" data-testid="list" aria-label="Notifications"></ul>
            <p class="empty" data-testid="empty" hidden></p>
            <div class="sentinel" aria-hidden="true"></div>
            <div class="more">
              <button type="button" class="load-more" data-testid="load-more" hidden>Load more</button>
            </div>
          </div>
        </section>
      </div>
    </header>
    <main class="page">
      <section class="forbidden" data-testid="forbidden" hidden>
        <p>The server refused this site: its address (<code class="origin"></code>) is not in the server's <code>CAMPANA_ALLOWED_ORIGINS</code>. Nothing will reconnect until it is added.</p>
      </section>
      <section class="signed-out" data-testid="signed-out" hidden>
        <p>Signed out: <span class="reason"></span>. Paste another token, or retry once signed in again.</p>
        <form>
          <label for="next-token">Token</label>
          <input id="next-token" name="token" data-testid="token-input" placeholder="eyJhbGciOi…" autocomplete="off" required />
          <button type="submit" data-testid="use-token">Use this token</button>
          <button type="button" class="retry" data-testid="retry">Retry</button>
        </form>
      </section>
      <section class="intro">
        <h2>Your workspace</h2>
        <p>Notifications for this user arrive in the bell above, live, in every tab at once.</p>
        <p>Send one from a terminal: <code>campana send &lt;user&gt; --message "Hello"</code>.</p>
      </section>
    </main>
    <div class="visually-hidden" role="status" aria-live="polite" data-testid="announcer"></div>`;
  const $ = <T extends Element = HTMLElement>(selector: string) =>
    root.querySelector<T>(selector) as T;
  $('.origin').textContent = location.origin;
  $('.user').textContent = user ? `signed in as ${user}` : '';

  const announcer = announce($('[role=status]'));
  const centre = new NotificationCenter({
    baseUrl: location.origin,
    // The client sends reads with keepalive: one made by clicking a row's link outlives the page.
    getToken: tokens.getToken,
    socket: { keepaliveMs: keepalive },
    // One socket for every tab of this user; a token without a user keeps its own.
    createSocket: user
      ? (options) =>
          new SharedSocket({ ...options, channelName: `campana:${location.origin}:${user}` })
      : undefined,
    onNotification: (item) => announcer.item(item.message),
  });

  const bell = $<HTMLButtonElement>('.bell');
  const popover = $('.popover');
  const list = $<HTMLUListElement>('.list');
  const scroller = $('.feed-scroll');
  const loadMoreButton = $<HTMLButtonElement>('.load-more');
  const rows = new Map<string, Row>();
  let filter: Filter = 'all';
  /** Read while the Unread view shows them: they stay until the view changes, so focus does. */
  let keptInUnreadView = new Set<string>();
  let actionError: string | null = null;
  let lastConnection: ConnectionState | null = null;
  let wasLive = false;
  let sentinelInView = false;

  const failed = (error: unknown) => {
    actionError = error instanceof Error ? error.message : String(error);
    render();
  };
  const markRead = (id: string) => {
    if (centre.store.getState().notificationsById.get(id)?.is_read) return;
    actionError = null;
    centre.markRead(id).catch(failed);
  };

  const isOpen = () => !popover.hidden;
  const setOpen = (open: boolean, { focusBell = false } = {}) => {
    popover.hidden = !open;
    bell.setAttribute('aria-expanded', String(open));
    if (open) {
      keptInUnreadView = new Set();
      render();
      maybeLoadMore();
    }
    if (focusBell) bell.focus();
  };

  const render = () => {
    const state = centre.store.getState();
    renderConnection(state);
    renderBadge(state.unreadCount);
    const items = centre.store.items();
    const shown =
      filter === 'all'
        ? items
        : items.filter((item) => !item.is_read || keptInUnreadView.has(item.id));
    if (filter === 'unread') for (const item of shown) keptInUnreadView.add(item.id);
    renderList(shown);
    renderFooter(state, items.length, shown.length);
    maybeLoadMore();
  };

  const renderConnection = (state: NotificationState) => {
    const connection = $('.connection');
    connection.textContent = STATES[state.connection];
    connection.className = `connection ${state.connection}`;
    $('.signed-out').hidden = state.connection !== 'unauthorized';
    $('.forbidden').hidden = state.connection !== 'forbidden';
    $('.reason').textContent = state.authError?.message ?? '';
    if (state.connection === lastConnection) return;
    // Going live as the page loads is not news; going live again is, and it clears the
    // banner of an action that failed meanwhile.
    const said = ANNOUNCED_STATES[state.connection];
    if (said && (wasLive || state.connection !== 'open')) announcer.say(said);
    if (state.connection === 'open') {
      wasLive = true;
      actionError = null;
    }
    lastConnection = state.connection;
  };

  const renderBadge = (count: number) => {
    const shown = count > 99 ? '99+' : String(count);
    const badge = $('.badge');
    badge.textContent = shown;
    badge.hidden = count === 0;
    bell.setAttribute(
      'aria-label',
      count === 0 ? 'Notifications' : `Notifications, ${count} unread`,
    );
    const readAll = $('.read-all');
    readAll.setAttribute('aria-disabled', String(count === 0));
    const unreadFilter = $('[data-filter=unread]');
    unreadFilter.textContent = count === 0 ? 'Unread' : `Unread (${shown})`;
  };

  /**
   * Keyed: each item keeps its row, updated in place; rows are only inserted or removed,
   * never moved or rebuilt, so the focused row (or button) keeps focus through any event.
   */
  const renderList = (shown: readonly NotificationItem[]) => {
    const wanted = new Set(shown.map((item) => item.id));
    const focusWasInList = list.contains(document.activeElement);
    for (const [id, row] of rows) {
      if (wanted.has(id)) continue;
      row.element.remove();
      rows.delete(id);
    }
    let cursor = list.firstElementChild;
    for (const item of shown) {
      let row = rows.get(item.id);
      if (!row) {
        row = createRow(item, markRead);
        rows.set(item.id, row);
      }
      updateRow(row, item);
      if (row.element === cursor) cursor = cursor.nextElementSibling;
      else list.insertBefore(row.element, cursor);
    }
    // A removed row took focus with it: keep it in the list rather than drop it on <body>.
    if (focusWasInList && !list.contains(document.activeElement))
      list.querySelector<HTMLElement>('.row')?.focus();
  };

  const renderFooter = (state: NotificationState, held: number, shown: number) => {
    const empty = $('.empty');
    const live = state.connection === 'open';
    let emptyText = '';
    if (held === 0 && live) emptyText = 'No notifications yet.';
    else if (held === 0 && WAITING.includes(state.connection)) emptyText = 'Loading notifications…';
    else if (held === 0) emptyText = 'Not connected.';
    else if (shown === 0 && filter === 'unread') emptyText = 'You are all caught up.';
    empty.textContent = emptyText;
    empty.hidden = emptyText === '';

    // An empty snapshot (the newest items) means there is nothing older to page through.
    loadMoreButton.hidden = !state.hasMore || held === 0;
    loadMoreButton.textContent = state.isLoadingMore
      ? 'Loading…'
      : state.loadError
        ? 'Try again'
        : 'Load more';
    loadMoreButton.setAttribute('aria-disabled', String(state.isLoadingMore));
    scroller.setAttribute('aria-busy', String(state.isLoadingMore));

    const error = $('.error');
    const message = state.loadError
      ? `Could not load older notifications: ${errorText(state.loadError)}`
      : actionError;
    error.textContent = message ?? '';
    error.hidden = message === null;
  };

  /** Scrolling the sentinel into view loads the next page; a failure waits for the button. */
  const maybeLoadMore = () => {
    const state = centre.store.getState();
    if (!isOpen() || !sentinelInView || state.orderedIds.length === 0) return;
    if (!state.hasMore || state.isLoadingMore || state.loadError) return;
    void centre.loadMore();
  };

  new IntersectionObserver(
    (entries) => {
      sentinelInView = entries.some((entry) => entry.isIntersecting);
      maybeLoadMore();
    },
    { root: scroller, rootMargin: '0px 0px 120px 0px' },
  ).observe($('.sentinel'));

  loadMoreButton.addEventListener('click', () => {
    if (!centre.store.getState().isLoadingMore) void centre.loadMore();
  });
  bell.addEventListener('click', () => setOpen(!isOpen()));
  $('.read-all').addEventListener('click', () => {
    if (centre.store.getState().unreadCount === 0) return;
    actionError = null;
    centre.markAllRead().catch(failed);
  });
  for (const button of Array.from(root.querySelectorAll<HTMLButtonElement>('.filter'))) {
    button.addEventListener('click', () => {
      filter = button.dataset.filter as Filter;
      keptInUnreadView = new Set();
      for (const other of Array.from(root.querySelectorAll('.filter')))
        other.setAttribute('aria-pressed', String(other === button));
      render();
    });
  }
  list.addEventListener('keydown', (event) => moveFocus(list, event));
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || !isOpen()) return;
    event.preventDefault();
    setOpen(false, { focusBell: true });
  });
  document.addEventListener('pointerdown', (event) => {
    const target = event.target as Element;
    if (!isOpen() || popover.contains(target) || bell.contains(target)) return;
    setOpen(false);
    // Focus goes back to the bell, unless the click gave it to something else. The click's
    // own focus change (to <body> for a bare spot) comes after pointerdown: look once it has.
    setTimeout(() => {
      if (document.activeElement === document.body || document.activeElement === null) bell.focus();
    });
  });

  $('.retry').addEventListener('click', () => centre.retryNow());
  $<HTMLFormElement>('.signed-out form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = new FormData(event.target as HTMLFormElement).get('token');
    if (typeof value !== 'string' || !value.trim()) return;
    const url = new URL(location.href);
    url.searchParams.delete('token_url');
    url.searchParams.set('token', value.trim());
    // The list (and the shared socket) belongs to one user: another user starts a fresh page.
    if (!tokens.use || !user || subjectOf(value.trim()) !== user) {
      location.assign(url);
      return;
    }
    tokens.use(value.trim());
    history.replaceState(null, '', url); // a reload keeps the new token
    centre.retryNow();
  });

  centre.store.subscribe(render);
  // Relative times age: only their text changes, never the rows around them.
  setInterval(() => {
    for (const row of rows.values()) row.time.textContent = relativeTime(row.time.dateTime);
  }, 30_000);
  render();
  centre.connect();
}

interface Row {
  element: HTMLLIElement;
  /** The row's one focusable element: a link when the item has one, a button otherwise. */
  main: HTMLElement;
  state: HTMLElement;
  time: HTMLTimeElement;
  markRead: HTMLButtonElement;
}

/** `markRead` runs on a click of the row (a link row then follows its href) or its button. */
function createRow(item: NotificationItem, markRead: (id: string) => void): Row {
  const element = document.createElement('li');
  element.dataset.id = item.id;
  element.dataset.testid = 'item';

  let main: HTMLElement;
  if (item.link_url) {
    const link = document.createElement('a');
    link.href = item.link_url; // the server admits only http(s) URLs and site paths
    main = link;
  } else {
    const plain = document.createElement('button');
    plain.type = 'button';
    main = plain;
  }
  main.className = 'row';
  main.addEventListener('click', () => markRead(item.id));

  // Read first in the accessible name ("Unread: …"), shown as a dot, never colour alone.
  const state = document.createElement('span');
  state.className = 'visually-hidden';
  const dot = document.createElement('span');
  dot.className = 'dot';
  dot.setAttribute('aria-hidden', 'true');
  const icon = document.createElement('span');
  const [glyph, tone] = ICONS[item.type] ?? ['•', 'info'];
  icon.className = `icon ${tone}`;
  icon.setAttribute('aria-hidden', 'true');
  icon.textContent = glyph;
  const body = document.createElement('span');
  body.className = 'body';
  const message = document.createElement('span');
  message.className = 'message';
  message.textContent = item.message; // text, never HTML
  const meta = document.createElement('span');
  meta.className = 'meta';
  const time = document.createElement('time');
  time.dateTime = item.created_at;
  time.title = new Date(item.created_at).toLocaleString();
  time.textContent = relativeTime(item.created_at);
  meta.append(time);
  if (item.link_url) meta.append(' · opens ', linkLabel(item.link_url));
  body.append(message, meta);
  main.append(state, icon, body, dot);

  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'mark-read';
  button.dataset.testid = 'mark-read';
  button.textContent = 'Mark read';
  button.setAttribute('aria-label', `Mark read: ${item.message}`);
  button.addEventListener('click', () => {
    // The button goes once the item reads: hand focus to its row first, not to <body>.
    main.focus();
    markRead(item.id);
  });

  element.append(main, button);
  return { element, main, state, time, markRead: button };
}

function updateRow(row: Row, item: NotificationItem): void {
  const className = item.is_read ? 'item read' : 'item unread';
  if (row.element.className === className) return;
  row.element.className = className;
  row.state.textContent = item.is_read ? 'Read: ' : 'Unread: ';
  // A row made for an item already read is not in the page yet: `parentElement`, not
  // `isConnected`, tells whether the button is still there.
  if (item.is_read && row.markRead.parentElement) {
    if (document.activeElement === row.markRead) row.main.focus();
    row.markRead.remove();
  }
}

/** Arrow keys, Home and End move between rows; Tab still reaches every button. */
function moveFocus(list: HTMLElement, event: KeyboardEvent): void {
  const keys = ['ArrowDown', 'ArrowUp', 'Home', 'End'];
  if (!keys.includes(event.key)) return;
  const mains = Array.from(list.querySelectorAll<HTMLElement>('.row'));
  if (mains.length === 0) return;
  const current = mains.findIndex((main) => main.closest('li')?.contains(document.activeElement));
  const last = mains.length - 1;
  const next = {
    ArrowDown: Math.min(current + 1, last),
    ArrowUp: Math.max(current - 1, 0),
    Home: 0,
    End: last,
  }[event.key];
  event.preventDefault();
  mains[next ?? 0]?.focus();
}

/**
 * The polite live region: new items ("New notification: …", several at once counted) and
 * connection changes. Text is set after a tick so that the same words are read again.
 */
function announce(region: HTMLElement) {
  let pending: string[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    region.textContent =
      pending.length === 1
        ? `New notification: ${pending[0]}`
        : `${pending.length} new notifications`;
    pending = [];
    timer = undefined;
  };
  return {
    item(message: string) {
      pending.push(message);
      timer ??= setTimeout(flush, 400);
    },
    say(text: string) {
      region.textContent = '';
      setTimeout(() => (region.textContent = text), 50);
    },
  };
}

function linkLabel(url: string): string {
  try {
    const parsed = new URL(url, location.href);
    return parsed.origin === location.origin ? parsed.pathname : parsed.host;
  } catch {
    return url;
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const formatter = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

function relativeTime(iso: string): string {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const units: [Intl.RelativeTimeFormatUnit, number][] = [
    ['day', 86_400],
    ['hour', 3_600],
    ['minute', 60],
  ];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return formatter.format(Math.round(seconds / size), unit);
  }
  return formatter.format(seconds, 'second');
}

/** The token's user (`sub`), or '' when it is not a readable JWT. */
function subjectOf(jwt: string): string {
  try {
    const payload = JSON.parse(
      atob(jwt.split('.')[1]?.replace(/-/g, '+').replace(/_/g, '/') ?? ''),
    );
    return typeof payload.sub === 'string' ? payload.sub : '';
  } catch {
    return '';
  }
}
