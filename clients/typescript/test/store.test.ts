import { describe, expect, it } from 'vitest';

import type { NotificationItem } from '../src/types.js';

import { EMPTY_STATE, NotificationStore } from '../src/store.js';
import { item } from './fakes.js';

describe('NotificationStore', () => {
  it('orders newest first by created_at, microseconds and then id', () => {
    const store = new NotificationStore();
    const a = item({ id: 'a', created_at: '2026-11-28T07:00:00.000100Z' });
    const b = item({ id: 'b', created_at: '2026-11-28T07:00:00.000200Z' });
    const c = item({ id: 'c', created_at: '2026-11-28T07:00:00.0002Z' });
    const d = item({ id: 'd', created_at: '2026-11-28T08:00:00+01:00' });
    store.apply({ event: 'snapshot', payload: [a, b, c, d] });
    expect(store.getState().orderedIds).toEqual(['c', 'b', 'a', 'd']);
  });

  it('dedupes by id: a created event for a snapshot item replaces it', () => {
    const store = new NotificationStore();
    const first = item();
    store.apply({ event: 'snapshot', payload: [first] });
    store.apply({ event: 'notification.created', payload: { ...first, message: 'edited' } });
    expect(store.items()).toEqual([{ ...first, message: 'edited' }]);
  });

  it('merges a full snapshot into what it holds instead of wiping older items', () => {
    const store = new NotificationStore({ snapshotSize: 1 });
    const old = item();
    const newer = item();
    store.apply({ event: 'snapshot', payload: [old] });
    store.apply({ event: 'snapshot', payload: [newer] });
    expect(store.items().map((i) => i.id)).toEqual([newer.id, old.id]);
  });

  it('takes the badge from unread_count.updated, whatever the items say', () => {
    const store = new NotificationStore();
    store.apply({ event: 'snapshot', payload: [item(), item()] });
    store.apply({ event: 'unread_count.updated', payload: { count: 7 } });
    expect(store.getState().unreadCount).toBe(7);
  });

  it('reads every held item when the count drops to 0 (mark all read sends only that)', () => {
    const store = new NotificationStore();
    store.apply({ event: 'snapshot', payload: [item(), item()] });
    store.apply({ event: 'unread_count.updated', payload: { count: 0 } });
    expect(store.items().map((i) => i.is_read)).toEqual([true, true]);
  });

  it('marks an item read on notification.read, and ignores unknown ids', () => {
    const store = new NotificationStore();
    const held = item();
    store.apply({ event: 'snapshot', payload: [held] });
    store.apply({ event: 'notification.read', payload: { id: held.id, is_read: true } });
    store.apply({ event: 'notification.read', payload: { id: 'unknown', is_read: true } });
    expect(store.items()).toEqual([{ ...held, is_read: true, is_seen: true }]); // read is seen
  });

  it('notifies listeners with a new state object only when something changed', () => {
    const store = new NotificationStore();
    const seen: unknown[] = [];
    const unsubscribe = store.subscribe(() => seen.push(store.getState()));
    store.apply({ event: 'unread_count.updated', payload: { count: 1 } });
    store.apply({ event: 'unread_count.updated', payload: { count: 1 } });
    store.apply({ event: 'keepalive', payload: {} });
    unsubscribe();
    store.apply({ event: 'unread_count.updated', payload: { count: 2 } });
    expect(seen).toHaveLength(1);
  });

  it('reads locally and undoes exactly that', () => {
    const store = new NotificationStore();
    const unread = item();
    const read = item({ is_read: true });
    store.apply({ event: 'snapshot', payload: [unread, read] });
    store.apply({ event: 'unread_count.updated', payload: { count: 4 } });
    const pending = store.markReadLocally([unread.id, read.id]);
    expect(store.getState().unreadCount).toBe(3);
    expect(store.items().every((i) => i.is_read)).toBe(true);
    pending.rollBack();
    expect(store.getState().unreadCount).toBe(4);
    expect(store.items().find((i) => i.id === unread.id)?.is_read).toBe(false);
    expect(store.items().find((i) => i.id === read.id)?.is_read).toBe(true);
  });
});

/** A store holding `unread.length` unread items and that count, as after a connect. */
function holding(...unread: NotificationItem[]) {
  const store = new NotificationStore();
  store.apply({ event: 'snapshot', payload: unread });
  store.apply({ event: 'unread_count.updated', payload: { count: unread.length } });
  const isRead = (held: NotificationItem) =>
    store.getState().notificationsById.get(held.id)?.is_read;
  const badge = () => store.getState().unreadCount;
  return { store, isRead, badge };
}

const readEvent = (held: NotificationItem) =>
  ({ event: 'notification.read', payload: { id: held.id, is_read: true } }) as const;
const countEvent = (count: number) =>
  ({ event: 'unread_count.updated', payload: { count } }) as const;
const keepalive = { event: 'keepalive', payload: {} } as const;

describe('NotificationStore optimistic reads', () => {
  it('a failed read after another read was confirmed keeps the newer count (A fails, B confirmed)', () => {
    const [a, b, c] = [item(), item(), item()];
    const { store, isRead, badge } = holding(a, b, c);
    const readA = store.markReadLocally([a.id]);
    store.markReadLocally([b.id]);
    expect(badge()).toBe(1);
    store.apply(readEvent(b));
    store.apply(countEvent(2));
    expect(badge()).toBe(1); // A is still pending: the server's 2 does not include it
    expect(readA.rollBack()).toBe(false); // a count arrived since: no need to ask the server
    expect(badge()).toBe(2);
    expect([isRead(a), isRead(b), isRead(c)]).toEqual([false, true, false]);
  });

  it('a failed call whose read the socket confirmed keeps the item read (a proxy 504)', () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    const read = store.markReadLocally([a.id]);
    store.apply(readEvent(a));
    store.apply(countEvent(1));
    expect(read.rollBack()).toBe(false);
    expect(isRead(a)).toBe(true);
    expect(badge()).toBe(1);
  });

  it('a failed call with no count since asks for one, and takes the REST answer', async () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    const read = store.markReadLocally([a.id]);
    expect(read.rollBack()).toBe(true);
    expect(isRead(a)).toBe(false);
    await store.refreshUnreadCount(async () => 1); // the server did commit it
    expect(badge()).toBe(1);
    store.apply(readEvent(a)); // its event, late
    expect(isRead(a)).toBe(true);
  });

  it('a REST count that a socket count overtook is dropped', async () => {
    const { store, badge } = holding(item(), item());
    let answer: (count: number) => void = () => undefined;
    const refreshing = store.refreshUnreadCount(() => new Promise((resolve) => (answer = resolve)));
    store.apply(countEvent(3));
    answer(2);
    await refreshing;
    expect(badge()).toBe(3);
  });

  it('a failed mark-all-read restores the items and takes the count that arrived meanwhile', () => {
    const [a, b] = [item(), item()];
    const { store, badge } = holding(a, b);
    const readAll = store.markReadLocally('all');
    expect(badge()).toBe(0);
    const c = item();
    store.apply({ event: 'notification.created', payload: c });
    store.apply(countEvent(3));
    expect(badge()).toBe(1); // what shows unread: the new item
    expect(readAll.rollBack()).toBe(false);
    expect(badge()).toBe(3);
    expect(store.items().filter((i) => !i.is_read)).toHaveLength(3);
  });

  it('a count of 0 after the call started confirms every pending read', () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    const readAll = store.markReadLocally('all');
    store.apply(countEvent(0));
    expect(readAll.rollBack()).toBe(false);
    expect([isRead(a), isRead(b)]).toEqual([true, true]);
    expect(badge()).toBe(0);
  });

  it('a count that does not include a pending read does not raise the badge', () => {
    const [a, b] = [item(), item()];
    const { store, badge } = holding(a, b);
    store.markReadLocally([a.id]);
    const c = item();
    store.apply({ event: 'notification.created', payload: c });
    store.apply(countEvent(3)); // A, B, C unread on the server: ours is still on its way
    expect(badge()).toBe(2);
  });

  it('the badge holds still from notification.read to its count', () => {
    const [a, b] = [item(), item()];
    const { store, badge } = holding(a, b);
    store.markReadLocally([a.id]);
    const seen: number[] = [];
    store.subscribe(() => seen.push(badge()));
    store.apply(readEvent(a));
    store.apply(countEvent(1));
    expect(badge()).toBe(1);
    expect(seen.filter((count) => count !== 1)).toEqual([]);
  });

  it('a confirmed read whose count the server dropped as stale settles at the next frame', () => {
    const [a, b, c] = [item(), item(), item()];
    const { store, badge } = holding(a, b);
    store.markReadLocally([a.id]);
    // A newer change overtook our read: its count already leaves A out.
    store.apply({ event: 'notification.created', payload: c });
    store.apply(countEvent(2));
    store.apply(readEvent(a));
    store.apply(keepalive);
    expect(badge()).toBe(2);
  });

  it('a committed read waits for a count that includes it, then takes that count', () => {
    const [a, b] = [item(), item()];
    const { store, badge } = holding(a, b);
    const read = store.markReadLocally([a.id]);
    expect(read.commit()).toBe(true); // the answer beat its events to the tab
    expect(badge()).toBe(1);
    store.apply(readEvent(a));
    store.apply(countEvent(1));
    expect(badge()).toBe(1);
    store.apply(countEvent(4));
    expect(badge()).toBe(4);
  });

  it('a committed read of an item the server had already read settles with the REST count', async () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    store.apply(countEvent(1)); // A was read elsewhere while this tab held an old copy
    const read = store.markReadLocally([a.id]);
    expect(badge()).toBe(0);
    expect(read.commit()).toBe(true);
    await store.refreshUnreadCount(async () => 1);
    expect(badge()).toBe(1);
    expect(isRead(a)).toBe(true);
  });

  it('a read needs no count when its events arrived before the answer', () => {
    const [a, b] = [item(), item()];
    const { store, badge } = holding(a, b);
    const read = store.markReadLocally([a.id]);
    store.apply(readEvent(a));
    store.apply(countEvent(1));
    expect(read.commit()).toBe(false);
    expect(badge()).toBe(1);
  });

  it('a failure leaves the read of a concurrent call standing, and its success keeps it', () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    const failing = store.markReadLocally([a.id]);
    const succeeding = store.markReadLocally([a.id]);
    failing.rollBack();
    expect(isRead(a)).toBe(true); // the other read still claims it
    expect(badge()).toBe(1);
    expect(succeeding.commit()).toBe(true);
    expect(isRead(a)).toBe(true);
  });

  it('a snapshot that shows a pending read as done confirms it', () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    const read = store.markReadLocally([a.id]);
    store.apply({ event: 'snapshot', payload: [{ ...a, is_read: true }, b] });
    store.apply(countEvent(1));
    read.rollBack();
    expect(isRead(a)).toBe(true);
    expect(badge()).toBe(1);
  });
});

describe('NotificationStore: the socket is the truth', () => {
  it('notification.created for an item held as read keeps it read (a duplicate)', () => {
    const a = item();
    const { store, isRead } = holding(a);
    store.apply(readEvent(a));
    store.apply({ event: 'notification.created', payload: { ...a, message: 'again' } });
    expect(isRead(a)).toBe(true);
    expect(store.items()[0]?.message).toBe('again');
  });

  it('a snapshot unreads an item marked unread while the socket was away', () => {
    const a = item();
    const { store, isRead } = holding(a);
    store.apply(readEvent(a));
    store.apply({ event: 'snapshot', payload: [{ ...a, is_seen: true }] });
    expect(isRead(a)).toBe(false);
    store.upsert([{ ...a, is_read: true, is_seen: true }]);
    expect(isRead(a)).toBe(true);
  });

  it("a REST page asked for before an event keeps the event's word", () => {
    const a = item();
    const { store, isRead } = holding(a);
    store.loadingMore();
    store.apply(readEvent(a));
    store.addPage([a], { hasMore: false }); // read on the server before the event
    expect(isRead(a)).toBe(true);
  });

  it('an item read optimistically stays read through a snapshot until the call fails', () => {
    const a = item();
    const { store, isRead } = holding(a);
    const read = store.markReadLocally([a.id]);
    store.apply({ event: 'snapshot', payload: [a] }); // a reconnect before the server commits
    expect(isRead(a)).toBe(true);
    read.rollBack();
    expect(isRead(a)).toBe(false);
  });
});

describe('NotificationStore pages', () => {
  it('starts empty and idle, with no older items to offer until a snapshot says so', () => {
    expect(new NotificationStore().getState()).toEqual(EMPTY_STATE);
    expect(EMPTY_STATE).toMatchObject({ connection: 'idle', hasMore: false, isLoadingMore: false });
  });

  it('an empty snapshot means nothing older; one with items means older ones may exist', () => {
    const empty = new NotificationStore();
    empty.apply({ event: 'snapshot', payload: [] });
    expect(empty.getState().hasMore).toBe(false);
    expect(empty.mayHaveOlder()).toBe(false);
    const held = new NotificationStore();
    held.apply({ event: 'snapshot', payload: [item()] });
    expect(held.getState().hasMore).toBe(true);
    held.addPage([], { hasMore: false });
    held.apply({ event: 'snapshot', payload: [item()] }); // pages, not snapshots, decide now
    expect(held.getState().hasMore).toBe(false);
  });

  it('merges a page with what it holds, one copy per id, newest first', () => {
    const [newest, shared, oldest] = [item(), item(), item()].reverse() as NotificationItem[];
    const { store } = holding(newest!, shared!);
    store.loadingMore();
    store.addPage([shared!, oldest!], { hasMore: true });
    expect(store.items().map((i) => i.id)).toEqual([newest!.id, shared!.id, oldest!.id]);
    expect(store.getState()).toMatchObject({ hasMore: true, isLoadingMore: false });
  });

  it('a page keeps what the socket said while it was on its way, and updates the rest', () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    store.loadingMore();
    store.apply(readEvent(a));
    store.apply(countEvent(1));
    store.addPage([a, { ...b, is_read: true, is_seen: true }], { hasMore: false });
    expect([isRead(a), isRead(b)]).toEqual([true, true]);
    expect(badge()).toBe(1); // the count stays the server's: a page carries none
  });

  it('a page that shows a pending read as done keeps the badge still until its count', () => {
    const [a, b] = [item(), item()];
    const { store, isRead, badge } = holding(a, b);
    const read = store.markReadLocally([a.id]);
    const seen: number[] = [];
    store.subscribe(() => seen.push(badge()));
    store.addPage([{ ...a, is_read: true }], { hasMore: false });
    store.apply(readEvent(a)); // the socket's events for the read, after the page
    store.apply(countEvent(1));
    expect(read.rollBack()).toBe(false); // a 504: the server had read it all the same
    expect(isRead(a)).toBe(true);
    expect(seen.filter((count) => count !== 1)).toEqual([]);
  });

  it('stops having more after a page without a next one', () => {
    const store = new NotificationStore();
    store.addPage([], { hasMore: false });
    expect(store.getState().hasMore).toBe(false);
  });

  it('holds a failure until the next attempt', () => {
    const store = new NotificationStore();
    store.loadingMore();
    expect(store.getState()).toMatchObject({ isLoadingMore: true, loadError: null });
    const error = new TypeError('network down');
    store.loadMoreFailed(error);
    expect(store.getState()).toMatchObject({ isLoadingMore: false, loadError: error });
    store.loadingMore();
    expect(store.getState().loadError).toBeNull();
  });

  it('makes a new state object for each change, and keeps the unchanged parts', () => {
    const store = new NotificationStore();
    const states = [store.getState()];
    store.subscribe(() => states.push(store.getState()));
    store.loadingMore();
    store.addPage([item()], { hasMore: true });
    store.loadMoreFailed(new Error('boom'));
    expect(new Set(states).size).toBe(4);
    expect(states[1]?.notificationsById).toBe(states[0]?.notificationsById);
    expect(states[3]?.notificationsById).toBe(states[2]?.notificationsById);
    expect(states[0]).toEqual(EMPTY_STATE);
  });
});
