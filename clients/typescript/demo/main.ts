/**
 * The demo notification centre that `campana serve` shows at `/`.
 *
 * Query parameters: `token` (the user's JWT; without it the page asks for one) and
 * `keepalive` (the server's `CAMPANA_KEEPALIVE_SECONDS`, 25 by default; the page counts
 * the connection dead after two keepalives and a margin without a frame), e.g.
 * `/?token=eyJ…&keepalive=2`.
 */
import './style.css';

import { NotificationCenter } from '../src/center.js';
import type { ConnectionState, NotificationItem, NotificationType } from '../src/types.js';

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

const BELL = `<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path fill="currentColor" d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"/></svg>`;

const STATES: Record<ConnectionState, string> = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  open: 'Live',
  reconnecting: 'Reconnecting…',
  stopped: 'Stopped by the server',
  unauthorized: 'Signed out',
  closed: 'Closed',
};

const app = document.querySelector<HTMLDivElement>('#app');
if (!app) throw new Error('#app is missing');

const params = new URLSearchParams(location.search);
const token = params.get('token');
if (token) showCentre(app, token, keepaliveMs(params.get('keepalive')));
else showTokenForm(app);

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
        <input name="token" placeholder="eyJhbGciOi…" autocomplete="off" required />
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

function showCentre(root: HTMLElement, firstToken: string, keepalive: number | undefined): void {
  root.innerHTML = `
    <header>
      <h1>${BELL} Campana</h1>
      <span class="user"></span>
      <span class="connection" data-testid="connection"></span>
      <button class="bell" data-testid="bell" aria-label="Notifications">${BELL}<span class="badge" data-testid="badge"></span></button>
      <button class="read-all" data-testid="read-all">Mark all read</button>
    </header>
    <section class="signed-out" data-testid="signed-out" hidden>
      <p>Signed out: <span class="reason"></span>. Paste another token, or retry once signed in again.</p>
      <form>
        <input name="token" data-testid="token-input" placeholder="eyJhbGciOi…" autocomplete="off" required />
        <button type="submit" data-testid="use-token">Use this token</button>
        <button type="button" class="retry" data-testid="retry">Retry</button>
      </form>
    </section>
    <p class="error" role="alert" hidden></p>
    <ul class="list" data-testid="list"></ul>
    <p class="empty">No notifications yet. Try <code>campana send &lt;user&gt; --message "Hello"</code>.</p>`;
  const $ = <T extends Element>(selector: string) => root.querySelector<T>(selector) as T;
  let jwt = firstToken;
  $('.user').textContent = userOf(jwt);

  const centre = new NotificationCenter({
    baseUrl: location.origin,
    getToken: () => jwt,
    socket: { keepaliveMs: keepalive },
  });
  const showError = (error: unknown) => {
    $('.error').textContent = error instanceof Error ? error.message : String(error);
    $('.error').removeAttribute('hidden');
  };

  const render = () => {
    const state = centre.store.getState();
    const connection = $('.connection');
    connection.textContent = STATES[state.connection];
    connection.className = `connection ${state.connection}`;
    $('.signed-out').toggleAttribute('hidden', state.connection !== 'unauthorized');
    $('.reason').textContent = state.authError?.message ?? '';
    const badge = $('.badge');
    badge.textContent = state.unreadCount > 99 ? '99+' : String(state.unreadCount);
    badge.toggleAttribute('hidden', state.unreadCount === 0);
    const items = centre.store.items();
    $('.list').replaceChildren(...items.map((item) => row(item, centre, showError)));
    $('.empty').toggleAttribute('hidden', items.length > 0);
  };
  centre.store.subscribe(render);
  setInterval(render, 30_000); // relative times age
  $('.read-all').addEventListener('click', () => centre.markAllRead().catch(showError));
  $('.retry').addEventListener('click', () => centre.retryNow());
  $<HTMLFormElement>('.signed-out form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = new FormData(event.target as HTMLFormElement).get('token');
    if (typeof value !== 'string' || !value.trim()) return;
    const url = new URL(location.href);
    url.searchParams.set('token', value.trim());
    // The list belongs to one user: another user's token starts a fresh page.
    if (!userOf(jwt) || userOf(value.trim()) !== userOf(jwt)) {
      location.assign(url);
      return;
    }
    jwt = value.trim();
    $('.error').setAttribute('hidden', '');
    history.replaceState(null, '', url); // a reload keeps the new token
    centre.retryNow();
  });
  render();
  centre.connect();
}

function row(item: NotificationItem, centre: NotificationCenter, onError: (e: unknown) => void) {
  const li = document.createElement('li');
  li.className = item.is_read ? 'item read' : 'item unread';
  li.dataset.id = item.id;
  li.dataset.testid = 'item';
  const icon = document.createElement('span');
  const [glyph, tone] = ICONS[item.type] ?? ['•', 'info'];
  icon.className = `icon ${tone}`;
  icon.textContent = glyph;
  const body = document.createElement('div');
  body.className = 'body';
  const message = document.createElement('p');
  message.className = 'message';
  message.textContent = item.message; // text, never HTML
  const meta = document.createElement('p');
  meta.className = 'meta';
  const time = document.createElement('time');
  time.dateTime = item.created_at;
  time.title = new Date(item.created_at).toLocaleString();
  time.textContent = relativeTime(item.created_at);
  meta.append(time);
  if (item.link_url) {
    const link = document.createElement('a');
    link.href = item.link_url; // the server admits only http(s) URLs and site paths
    link.textContent = 'Open';
    meta.append(' · ', link);
  }
  body.append(message, meta);
  li.append(icon, body);
  if (!item.is_read) {
    const read = document.createElement('button');
    read.className = 'mark-read';
    read.dataset.testid = 'mark-read';
    read.textContent = 'Mark read';
    read.addEventListener('click', () => centre.markRead(item.id).catch(onError));
    li.append(read);
  }
  return li;
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

function userOf(jwt: string): string {
  try {
    const payload = JSON.parse(
      atob(jwt.split('.')[1]?.replace(/-/g, '+').replace(/_/g, '/') ?? ''),
    );
    return typeof payload.sub === 'string' ? `signed in as ${payload.sub}` : '';
  } catch {
    return '';
  }
}
