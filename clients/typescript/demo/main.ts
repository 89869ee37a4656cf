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
import { inView, ofTypes, VIEWS, type ViewFilter } from '../src/views.js';

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

/** The feed's tabs: a category (several types) of the inbox, or the archived view. */
interface Tab {
  key: string;
  label: string;
  view: ViewFilter;
  /** The types its count adds up; none for the archived view (counts are the inbox's). */
  counted: readonly NotificationType[];
}

const CAMPAIGNS: NotificationType[] = [
  'CAMPAIGN_SCHEDULED',
  'CAMPAIGN_SENDING',
  'CAMPAIGN_COMPLETED',
  'CAMPAIGN_ERROR',
];
const TEMPLATES: NotificationType[] = ['TEMPLATE_APPROVED', 'TEMPLATE_REJECTED'];
const ALL_TYPES = Object.keys(ICONS) as NotificationType[];

const TABS: Tab[] = [
  { key: 'all', label: 'All', view: VIEWS.inbox, counted: ALL_TYPES },
  { key: 'campaigns', label: 'Campaigns', view: ofTypes(CAMPAIGNS), counted: CAMPAIGNS },
  { key: 'templates', label: 'Templates', view: ofTypes(TEMPLATES), counted: TEMPLATES },
  { key: 'general', label: 'General', view: ofTypes(['GENERIC_INFO']), counted: ['GENERIC_INFO'] },
  { key: 'archived', label: 'Archived', view: VIEWS.archived, counted: [] },
];

/** What the bell's badge counts: unread items, or the ones not seen since the bell opened. */
type BadgeMode = 'unread' | 'unseen';
const BADGE_MODE_KEY = 'campana-demo-badge';

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

function showCentre(
  root: HTMLElement,
  tokens: TokenSource,
  user: string,
  keepalive: number | undefined,
): void {
  const tabs = TABS.map(
    (tab, index) =>
      `<button type="button" role="tab" class="tab" id="tab-${tab.key}" data-tab="${tab.key}" data-testid="tab-${tab.key}" aria-controls="feed-panel" aria-selected="${index === 0}" tabindex="${index === 0 ? 0 : -1}"><span class="tab-label">${tab.label}</span><span class="tab-count" hidden><span class="visually-hidden">, </span><span class="tab-number"></span><span class="visually-hidden"> unread</span></span></button>`,
  ).join('');
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
          <div class="tabs" role="tablist" aria-label="Categories">${tabs}</div>
          <div class="filters">
            <button type="button" class="filter" data-testid="filter-unread" aria-pressed="false">Unread only</button>
          </div>
          <p class="error" role="alert" data-testid="error" hidden></p>
          <div class="feed-scroll" id="feed-panel" role="tabpanel" aria-labelledby="tab-all">
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
        <fieldset class="badge-mode">
          <legend>The bell's badge counts</legend>
          <label><input type="radio" name="badge-mode" value="unread" data-testid="badge-unread" /> unread notifications</label>
          <label><input type="radio" name="badge-mode" value="unseen" data-testid="badge-unseen" /> new ones since the bell was last opened</label>
        </fieldset>
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
  const readAllButton = $<HTMLButtonElement>('.read-all');
  const unreadOnlyButton = $<HTMLButtonElement>('.filter');
  const tabButtons = Array.from(root.querySelectorAll<HTMLButtonElement>('[role=tab]'));
  const rows = new Map<string, Row>();
  let tab: Tab = TABS[0] as Tab;
  let unreadOnly = false;
  let badgeMode: BadgeMode =
    localStorage.getItem(BADGE_MODE_KEY) === 'unseen' ? 'unseen' : 'unread';
  /** Read while the unread view shows them: they stay until the view changes, so focus does. */
  let keptInUnreadView = new Set<string>();
  let actionError: string | null = null;
  let lastConnection: ConnectionState | null = null;
  let wasLive = false;
  let sentinelInView = false;

  /** The view the list pages: the tab's, unread only when the toggle says so. */
  const pagedView = (): ViewFilter => (unreadOnly ? { ...tab.view, isRead: false } : tab.view);

  const failed = (error: unknown) => {
    actionError = error instanceof Error ? error.message : String(error);
    render();
  };
  const attempt = (call: () => Promise<unknown>) => {
    actionError = null;
    call().catch(failed);
  };
  const actions: RowActions = {
    markRead: (id) => {
      if (centre.store.getState().notificationsById.get(id)?.is_read) return;
      attempt(() => centre.markRead(id));
    },
    markUnread: (id) => attempt(() => centre.markUnread(id)),
    toggleArchived: (item) => {
      announcer.say(
        `${item.is_archived ? 'Moved back to the inbox' : 'Archived'}: ${item.message}`,
      );
      attempt(() => (item.is_archived ? centre.unarchive(item.id) : centre.archive(item.id)));
    },
  };

  const isOpen = () => !popover.hidden;
  const setOpen = (open: boolean, { focusBell = false } = {}) => {
    popover.hidden = !open;
    bell.setAttribute('aria-expanded', String(open));
    if (open) {
      keptInUnreadView = new Set();
      // What the bell shows is now in front of the user: seen, though not read.
      if (unseenCount(centre.store.getState()) > 0) attempt(() => centre.markAllSeen());
      render();
      maybeLoadMore();
    }
    if (focusBell) bell.focus();
  };

  const render = () => {
    const state = centre.store.getState();
    renderConnection(state);
    renderBadge(state);
    renderTabs(state);
    const shown = shownItems(state);
    renderList(shown);
    renderFooter(state, shown.length);
    maybeLoadMore();
  };

  /** The tab's items; unread only, those read while shown too. */
  const shownItems = (state: NotificationState): NotificationItem[] => {
    if (!unreadOnly) return centre.store.items(tab.view);
    const shown = new Set(centre.store.items(pagedView()).map((item) => item.id));
    for (const id of keptInUnreadView) {
      const item = state.notificationsById.get(id);
      if (item && inView(item, tab.view)) shown.add(id);
    }
    keptInUnreadView = shown;
    return state.orderedIds
      .filter((id) => shown.has(id))
      .map((id) => state.notificationsById.get(id) as NotificationItem);
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

  const renderBadge = (state: NotificationState) => {
    const count = badgeMode === 'unseen' ? unseenCount(state) : state.unreadCount;
    const badge = $('.badge');
    badge.textContent = countText(count);
    badge.hidden = count === 0;
    const what = badgeMode === 'unseen' ? 'new' : 'unread';
    bell.setAttribute(
      'aria-label',
      count === 0 ? 'Notifications' : `Notifications, ${count} ${what}`,
    );
  };

  /** Each tab's exact unread count (the server's per-type counts); none for Archived. */
  const renderTabs = (state: NotificationState) => {
    for (const [index, button] of tabButtons.entries()) {
      const own = TABS[index] as Tab;
      const count = unreadOf(state, own.counted);
      // The name says what the number is ("Campaigns, 3 unread"), around the visible text.
      const badge = button.querySelector<HTMLElement>('.tab-count') as HTMLElement;
      badge.hidden = count === 0;
      (badge.querySelector('.tab-number') as HTMLElement).textContent = countText(count);
    }
    const unread = unreadOf(state, tab.counted);
    readAllButton.hidden = tab.view.archived === true;
    readAllButton.setAttribute('aria-disabled', String(unread === 0));
  };

  /**
   * Keyed: each item keeps its row, updated in place; rows are only inserted or removed,
   * never moved or rebuilt, so the focused row (or button) keeps focus through any event.
   */
  const renderList = (shown: readonly NotificationItem[]) => {
    const wanted = new Set(shown.map((item) => item.id));
    const focusWasInList = list.contains(document.activeElement);
    const mains = Array.from(list.querySelectorAll<HTMLElement>('.row'));
    const focusedIndex = mains.findIndex((main) =>
      main.closest('li')?.contains(document.activeElement),
    );
    for (const [id, row] of rows) {
      if (wanted.has(id)) continue;
      row.element.remove();
      rows.delete(id);
    }
    let cursor = list.firstElementChild;
    for (const item of shown) {
      let row = rows.get(item.id);
      if (!row) {
        row = createRow(item, actions);
        rows.set(item.id, row);
      }
      updateRow(row, item);
      if (row.element === cursor) cursor = cursor.nextElementSibling;
      else list.insertBefore(row.element, cursor);
    }
    // A removed row (archived, say) took focus with it: give it to the row now in its place
    // rather than drop it on <body>.
    if (focusWasInList && !list.contains(document.activeElement)) {
      const left = Array.from(list.querySelectorAll<HTMLElement>('.row'));
      left[Math.min(Math.max(focusedIndex, 0), left.length - 1)]?.focus();
    }
  };

  const renderFooter = (state: NotificationState, shown: number) => {
    const empty = $('.empty');
    const live = state.connection === 'open';
    const paging = centre.store.view(pagedView());
    const held = centre.store.items(tab.view).length;
    let emptyText = '';
    if (shown === 0 && paging.isLoadingMore) emptyText = 'Loading notifications…';
    else if (shown === 0 && !live && WAITING.includes(state.connection))
      emptyText = 'Loading notifications…';
    else if (shown === 0 && !live) emptyText = 'Not connected.';
    else if (shown === 0 && unreadOnly && held > 0) emptyText = 'You are all caught up.';
    else if (shown === 0 && tab.view.archived) emptyText = 'Nothing archived.';
    else if (shown === 0 && tab.key === 'all') emptyText = 'No notifications yet.';
    else if (shown === 0) emptyText = `Nothing in ${tab.label} yet.`;
    empty.textContent = emptyText;
    empty.hidden = emptyText === '';

    // An empty snapshot (the newest items) means there is nothing older to page through.
    const isInbox = tab.key === 'all' && !unreadOnly;
    loadMoreButton.hidden = !paging.hasMore || (isInbox && held === 0);
    loadMoreButton.textContent = paging.isLoadingMore
      ? 'Loading…'
      : paging.loadError
        ? 'Try again'
        : 'Load more';
    loadMoreButton.setAttribute('aria-disabled', String(paging.isLoadingMore));
    scroller.setAttribute('aria-busy', String(paging.isLoadingMore));

    const error = $('.error');
    const message = paging.loadError
      ? `Could not load older notifications: ${errorText(paging.loadError)}`
      : actionError;
    error.textContent = message ?? '';
    error.hidden = message === null;
  };

  /** Scrolling the sentinel into view loads the next page; a failure waits for the button. */
  const maybeLoadMore = () => {
    const state = centre.store.getState();
    const view = pagedView();
    const paging = centre.store.view(view);
    const isInbox = tab.key === 'all' && !unreadOnly;
    if (!isOpen() || !sentinelInView || (isInbox && state.orderedIds.length === 0)) return;
    if (!paging.hasMore || paging.isLoadingMore || paging.loadError) return;
    void centre.loadMore(view);
  };

  const selectTab = (next: Tab, { focus = false } = {}) => {
    tab = next;
    keptInUnreadView = new Set();
    for (const [index, button] of tabButtons.entries()) {
      const selected = TABS[index] === next;
      button.setAttribute('aria-selected', String(selected));
      button.tabIndex = selected ? 0 : -1;
      if (selected && focus) button.focus();
      if (selected) button.scrollIntoView({ block: 'nearest', inline: 'nearest' });
    }
    scroller.setAttribute('aria-labelledby', `tab-${next.key}`);
    scroller.scrollTop = 0;
    render();
  };

  new IntersectionObserver(
    (entries) => {
      sentinelInView = entries.some((entry) => entry.isIntersecting);
      maybeLoadMore();
    },
    { root: scroller, rootMargin: '0px 0px 120px 0px' },
  ).observe($('.sentinel'));

  loadMoreButton.addEventListener('click', () => {
    if (!centre.store.view(pagedView()).isLoadingMore) void centre.loadMore(pagedView());
  });
  bell.addEventListener('click', () => setOpen(!isOpen()));
  readAllButton.addEventListener('click', () => {
    if (unreadOf(centre.store.getState(), tab.counted) === 0) return;
    // A category reads its own types only.
    attempt(() => centre.markAllRead(tab.key === 'all' ? {} : { types: tab.counted }));
  });
  unreadOnlyButton.addEventListener('click', () => {
    unreadOnly = !unreadOnly;
    keptInUnreadView = new Set();
    unreadOnlyButton.setAttribute('aria-pressed', String(unreadOnly));
    render();
  });
  for (const [index, button] of tabButtons.entries()) {
    button.addEventListener('click', () => selectTab(TABS[index] as Tab));
  }
  // The tabs are one stop for Tab; arrows, Home and End move between them (and select).
  $('.tabs').addEventListener('keydown', (event) => {
    const current = TABS.indexOf(tab);
    const last = TABS.length - 1;
    const next = {
      ArrowRight: current === last ? 0 : current + 1,
      ArrowLeft: current === 0 ? last : current - 1,
      Home: 0,
      End: last,
    }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectTab(TABS[next] as Tab, { focus: true });
  });
  for (const radio of Array.from(root.querySelectorAll<HTMLInputElement>('[name=badge-mode]'))) {
    radio.checked = radio.value === badgeMode;
    radio.addEventListener('change', () => {
      badgeMode = radio.value === 'unseen' ? 'unseen' : 'unread';
      localStorage.setItem(BADGE_MODE_KEY, badgeMode);
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

/** 99+ past 99, as the badge and the tabs show it. */
function countText(count: number): string {
  return count > 99 ? '99+' : String(count);
}

/** The unread items of these types: the server's counts, or the badge without them. */
function unreadOf(state: NotificationState, types: readonly NotificationType[]): number {
  if (types.length === 0) return 0;
  if (!state.counts) return types.length === ALL_TYPES.length ? state.unreadCount : 0;
  if (types.length === ALL_TYPES.length) return state.counts.unread;
  return types.reduce((sum, type) => sum + state.counts!.by_type[type].unread, 0);
}

/** Not seen since the bell was opened: the server's count, or what the inbox holds unseen. */
function unseenCount(state: NotificationState): number {
  if (state.counts) return state.counts.unseen;
  return [...state.notificationsById.values()].filter((item) => !item.is_archived && !item.is_seen)
    .length;
}

interface RowActions {
  markRead: (id: string) => void;
  markUnread: (id: string) => void;
  toggleArchived: (item: NotificationItem) => void;
}

interface Row {
  element: HTMLLIElement;
  /** The row's one focusable element: a link when the item has one, a button otherwise. */
  main: HTMLElement;
  state: HTMLElement;
  time: HTMLTimeElement;
  /** Mark read on an unread row, mark unread on a read one: one of the two is in the row. */
  markRead: HTMLButtonElement;
  markUnread: HTMLButtonElement;
  archive: HTMLButtonElement;
  actions: HTMLElement;
  item: NotificationItem;
}

/** `markRead` runs on a click of the row (a link row then follows its href) or its button. */
function createRow(item: NotificationItem, actions: RowActions): Row {
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
  main.addEventListener('click', () => actions.markRead(item.id));

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

  const row: Row = {
    element,
    main,
    state,
    time,
    markRead: actionButton('mark-read', 'Mark read', item.message),
    markUnread: actionButton('mark-unread', 'Mark unread', item.message),
    archive: actionButton('archive', 'Archive', item.message),
    actions: document.createElement('span'),
    item,
  };
  row.actions.className = 'actions';
  row.markRead.addEventListener('click', () => {
    // The button goes once the item reads: hand focus to its row first, not to <body>.
    main.focus();
    actions.markRead(row.item.id);
  });
  row.markUnread.addEventListener('click', () => {
    main.focus();
    actions.markUnread(row.item.id);
  });
  row.archive.addEventListener('click', () => actions.toggleArchived(row.item));
  row.actions.append(item.is_read ? row.markUnread : row.markRead, row.archive);
  element.append(main, row.actions);
  return row;
}

function actionButton(testId: string, text: string, message: string): HTMLButtonElement {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'action';
  button.dataset.testid = testId;
  button.textContent = text;
  button.setAttribute('aria-label', `${text}: ${message}`);
  return button;
}

function updateRow(row: Row, item: NotificationItem): void {
  row.item = item;
  const archiveText = item.is_archived ? 'Unarchive' : 'Archive';
  if (row.archive.textContent !== archiveText) {
    row.archive.textContent = archiveText;
    row.archive.dataset.testid = item.is_archived ? 'unarchive' : 'archive';
    row.archive.setAttribute('aria-label', `${archiveText}: ${item.message}`);
  }
  const className = item.is_read ? 'item read' : 'item unread';
  if (row.element.className === className) return;
  row.element.className = className;
  row.state.textContent = item.is_read ? 'Read: ' : 'Unread: ';
  // One of Mark read and Mark unread, the one that applies; a button that goes with focus
  // on it hands focus to its row.
  const [gone, shown] = item.is_read
    ? [row.markRead, row.markUnread]
    : [row.markUnread, row.markRead];
  if (gone.parentElement) {
    if (document.activeElement === gone) row.main.focus();
    gone.replaceWith(shown);
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
