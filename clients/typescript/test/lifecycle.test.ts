import { describe, expect, it } from 'vitest';

import { NOTIFICATION_TYPES } from '../src/protocol.js';
import { NotificationStore, REMOVED_MEMORY } from '../src/store.js';
import type {
  BulkChange,
  BulkFilter,
  Counts,
  NotificationItem,
  NotificationType,
  ServerEvent,
} from '../src/types.js';
import { ofTypes, VIEWS } from '../src/views.js';
import { item } from './fakes.js';

/** Counts as the server sends them: `[unread, unseen]` per type given, 0 for the others. */
function countsOf(given: Partial<Record<NotificationType, [number, number]>> = {}): Counts {
  const by_type = Object.fromEntries(
    NOTIFICATION_TYPES.map((type) => {
      const [unread, unseen] = given[type] ?? [0, 0];
      return [type, { unread, unseen }];
    }),
  ) as Counts['by_type'];
  const values = Object.values(by_type);
  return {
    unread: values.reduce((sum, own) => sum + own.unread, 0),
    unseen: values.reduce((sum, own) => sum + own.unseen, 0),
    by_type,
  };
}

/** `count` items, newest first. */
function newestFirst(count: number, overrides: Partial<NotificationItem> = {}) {
  return Array.from({ length: count }, () => item(overrides)).reverse();
}

/**
 * A store after a connect: `held` in the snapshot (newest first), the unread count and the
 * per-type counts the server would send for them.
 */
function connected(held: NotificationItem[], { snapshotSize = 20 } = {}) {
  const store = new NotificationStore({ snapshotSize });
  const send = (event: ServerEvent) => store.apply(event);
  send({ event: 'snapshot', payload: held });
  sendCountsOf(send, held);
  const get = (id: string) => store.getState().notificationsById.get(id);
  const ids = (view = VIEWS.inbox) => store.items(view).map((shown) => shown.id);
  const badge = () => store.getState().unreadCount;
  const counts = () => store.getState().counts;
  return { store, send, get, ids, badge, counts };
}

/** The unread count and counts.updated the server sends when it holds exactly `items`. */
function sendCountsOf(send: (event: ServerEvent) => void, items: NotificationItem[]) {
  const given: Partial<Record<NotificationType, [number, number]>> = {};
  for (const each of items.filter((shown) => !shown.is_archived)) {
    const [unread, unseen] = given[each.type] ?? [0, 0];
    given[each.type] = [unread + Number(!each.is_read), unseen + Number(!each.is_seen)];
  }
  const counts = countsOf(given);
  send({ event: 'unread_count.updated', payload: { count: counts.unread } });
  send({ event: 'counts.updated', payload: counts });
}

const updated = (payload: NotificationItem) =>
  ({ event: 'notification.updated', payload }) as const;
const deleted = (id: string) => ({ event: 'notification.deleted', payload: { id } }) as const;
const created = (payload: NotificationItem) =>
  ({ event: 'notification.created', payload }) as const;
const unreadCount = (count: number) =>
  ({ event: 'unread_count.updated', payload: { count } }) as const;
const countsEvent = (payload: Counts) => ({ event: 'counts.updated', payload }) as const;
const keepalive = { event: 'keepalive', payload: {} } as const;
function changed(change: BulkChange, filter: Partial<BulkFilter> = {}) {
  const payload = {
    change,
    filter: { archived: false, types: null, is_read: null, up_to: null, ...filter },
  };
  return { event: 'notifications.changed', payload } as const;
}
const upTo = (shown: NotificationItem) => ({ id: shown.id, created_at: shown.created_at });

describe('NotificationStore: the new events', () => {
  it('notification.updated is the truth: an item read elsewhere turns unread again', () => {
    const [a] = newestFirst(1, { is_read: true, is_seen: true });
    const { send, get } = connected([a!]);
    send(updated({ ...a!, is_read: false }));
    expect(get(a!.id)).toMatchObject({ is_read: false, is_seen: true });
  });

  it('an archived item leaves the inbox view for the archived one, and comes back', () => {
    const [a, b] = newestFirst(2);
    const { send, ids } = connected([a!, b!]);
    send(updated({ ...b!, is_archived: true }));
    expect(ids()).toEqual([a!.id]);
    expect(ids(VIEWS.archived)).toEqual([b!.id]);
    send(updated({ ...b!, is_archived: false }));
    expect(ids()).toEqual([a!.id, b!.id]);
    expect(ids(VIEWS.archived)).toEqual([]);
  });

  it('notification.deleted removes the item for good: no duplicate, page or snapshot brings it back', () => {
    const [a, b] = newestFirst(2);
    const { store, send, ids } = connected([a!, b!]);
    send(deleted(b!.id));
    expect(ids()).toEqual([a!.id]);
    send(created(b!));
    store.addPage([b!], { hasMore: false, mark: Number.MAX_SAFE_INTEGER });
    send({ event: 'snapshot', payload: [a!, b!] });
    send(updated(b!));
    expect(store.has(b!.id)).toBe(false);
  });

  it('remembers a bounded number of deleted ids, the latest ones', () => {
    const gone = newestFirst(REMOVED_MEMORY + 1);
    const { store, send } = connected(gone.slice(0, 20));
    for (const each of gone) send(deleted(each.id));
    const [first, last] = [gone[0]!, gone.at(-1)!];
    store.addPage([first, last], { hasMore: false, mark: Number.MAX_SAFE_INTEGER });
    expect([store.has(first.id), store.has(last.id)]).toEqual([true, false]);
  });

  it('notifications.changed applies its change to every held item its filter matches', () => {
    const info = item({ type: 'GENERIC_INFO' }); // the oldest
    const sending = item({ type: 'CAMPAIGN_SENDING' });
    const error = item({ type: 'CAMPAIGN_ERROR' });
    const newer = item({ type: 'CAMPAIGN_ERROR' });
    const archived = item({ type: 'CAMPAIGN_ERROR', is_archived: true });
    const { store, send, get } = connected([newer, error, sending, info]);
    send(updated(archived));
    send(
      changed(
        { is_read: true, is_seen: true },
        { types: ['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING'], up_to: upTo(error) },
      ),
    );
    const read = (shown: NotificationItem) => get(shown.id)?.is_read;
    // Newer than up_to, another type, another view: untouched.
    expect([newer, error, sending, info].map(read)).toEqual([false, true, true, false]);
    expect(read(archived)).toBe(false);
    expect(get(error.id)?.is_seen).toBe(true);
    expect(store.items(VIEWS.unread)).toHaveLength(2);
  });

  it('notifications.changed archives only the read ones when its filter says is_read', () => {
    const [a, b] = newestFirst(2);
    const { send, ids } = connected([a!, { ...b!, is_read: true, is_seen: true }]);
    send(changed({ is_archived: true }, { is_read: true }));
    expect(ids()).toEqual([a!.id]);
    expect(ids(VIEWS.archived)).toEqual([b!.id]);
    send(changed({ is_archived: false }, { archived: true }));
    expect(ids()).toEqual([a!.id, b!.id]);
  });

  it('a delete-all removes the view it acted on, and remembers the ids', () => {
    const [a, b] = newestFirst(2);
    const { store, send, ids } = connected([a!]);
    send(updated({ ...b!, is_archived: true }));
    send(changed({ deleted: true }, { archived: true }));
    expect(ids()).toEqual([a!.id]);
    expect(store.has(b!.id)).toBe(false);
    store.addPage([b!], { hasMore: false, view: VIEWS.archived, mark: Number.MAX_SAFE_INTEGER });
    expect(store.has(b!.id)).toBe(false);
  });

  it('counts.updated gives the per-type counts, every type present; the badge stays the unread count', () => {
    const { store, send, counts } = connected([]);
    expect(counts()).toEqual(countsOf());
    const partial = { unread: 3, unseen: 1, by_type: { CAMPAIGN_ERROR: { unread: 3, unseen: 1 } } };
    send(countsEvent(partial as unknown as Counts));
    expect(counts()?.by_type.CAMPAIGN_ERROR).toEqual({ unread: 3, unseen: 1 });
    expect(counts()?.by_type.GENERIC_INFO).toEqual({ unread: 0, unseen: 0 });
    expect(counts()?.unseen).toBe(1);
    expect(store.getState().unreadCount).toBe(0);
    send(unreadCount(3));
    expect(counts()?.unread).toBe(3);
  });

  it('keeps its state object when counts.updated repeats the same counts', () => {
    const { store, send } = connected([item()]);
    const before = store.getState();
    send(countsEvent(countsOf({ GENERIC_INFO: [1, 1] })));
    expect(store.getState()).toBe(before);
  });

  it('takes an item of a server before the lifecycle states as in the inbox, seen when read', () => {
    const { id, message, type, link_url, created_at } = item();
    const { get } = connected([
      { id, message, type, link_url, created_at, is_read: true } as NotificationItem,
    ]);
    expect(get(id)).toMatchObject({ is_read: true, is_seen: true, is_archived: false });
  });

  it('counts no counts before the server sends them', () => {
    const store = new NotificationStore();
    store.apply({ event: 'snapshot', payload: [item()] });
    store.apply(unreadCount(1));
    expect(store.getState().counts).toBeNull();
    expect(store.countsKnown()).toBe(false);
  });
});

describe('NotificationStore: a snapshot shows what left the inbox', () => {
  it("drops a held inbox item newer than a full snapshot's oldest that it does not show", () => {
    const [gone, a, b, c, older] = newestFirst(5);
    const { send, ids, store } = connected([gone!, a!, b!], { snapshotSize: 3 });
    store.addPage([c!, older!], { hasMore: false });
    send({ event: 'snapshot', payload: [a!, b!, c!] });
    expect(ids()).toEqual([a!.id, b!.id, c!.id, older!.id]); // older: below the snapshot
  });

  it('drops every absent inbox item when the snapshot is not full, and never an archived one', () => {
    const [a, b, c] = newestFirst(3);
    const { send, ids, store } = connected([a!, b!, c!]);
    send(updated({ ...c!, is_archived: true }));
    send({ event: 'snapshot', payload: [a!] });
    expect(ids()).toEqual([a!.id]);
    expect(ids(VIEWS.archived)).toEqual([c!.id]);
    expect(store.has(b!.id)).toBe(false);
  });

  it('lets no page asked for before it bring a dropped item back; a newer page or an event may', () => {
    const [a, b] = newestFirst(2);
    const { send, store } = connected([a!, b!]);
    const mark = store.loadingMore();
    send({ event: 'snapshot', payload: [a!] });
    store.addPage([b!], { hasMore: false, mark });
    expect(store.has(b!.id)).toBe(false);
    send(created(b!)); // a duplicate of its creation
    expect(store.has(b!.id)).toBe(false);
    send(updated(b!)); // unarchived: back in the inbox
    expect(store.has(b!.id)).toBe(true);
  });

  it('confirms a pending archive of an item it does not show', () => {
    const [a, b] = newestFirst(2);
    const { send, store, ids } = connected([a!, b!]);
    const archiving = store.changeLocally([b!.id], { is_archived: true });
    send({ event: 'snapshot', payload: [a!] });
    sendCountsOf(send, [a!]);
    archiving.rollBack();
    expect(ids()).toEqual([a!.id]);
  });

  it('keeps an item a pending archive took out when the snapshot still shows it', () => {
    const [a, b] = newestFirst(2);
    const { send, store, ids } = connected([a!, b!]);
    const archiving = store.changeLocally([b!.id], { is_archived: true });
    send({ event: 'snapshot', payload: [a!, b!] }); // the call has not committed yet
    expect(ids()).toEqual([a!.id]);
    archiving.rollBack();
    expect(ids()).toEqual([a!.id, b!.id]);
  });
});

describe('NotificationStore: a page never overwrites a newer word of the socket', () => {
  it('keeps an unread the socket sent while the page was on its way', () => {
    const [a] = newestFirst(1, { is_read: true, is_seen: true });
    const { send, store, get } = connected([a!]);
    const mark = store.loadingMore();
    send(updated({ ...a!, is_read: false }));
    store.addPage([a!], { hasMore: false, mark });
    expect(get(a!.id)?.is_read).toBe(false);
  });

  it('takes the page for items the socket said nothing of since it was asked for', () => {
    const [a, b] = newestFirst(2);
    const { send, store, get } = connected([a!, b!]);
    send(updated({ ...a!, is_read: true, is_seen: true }));
    const mark = store.loadingMore();
    store.addPage(
      [
        { ...a!, is_read: false },
        { ...b!, is_archived: true },
      ],
      {
        hasMore: false,
        mark,
      },
    );
    expect(get(a!.id)?.is_read).toBe(false);
    expect(get(b!.id)?.is_archived).toBe(true);
  });

  it('does not bring back an item the socket deleted while the page was on its way', () => {
    const [a] = newestFirst(1);
    const { send, store } = connected([a!]);
    const mark = store.loadingMore(VIEWS.archived);
    send(deleted(a!.id));
    store.addPage([a!], { hasMore: false, mark, view: VIEWS.archived });
    expect(store.has(a!.id)).toBe(false);
  });

  it("takes the mark of the view's last loadingMore when none is given", () => {
    const [a] = newestFirst(1);
    const { send, store, get } = connected([a!]);
    store.loadingMore(VIEWS.unread);
    send(updated({ ...a!, is_read: true, is_seen: true }));
    store.addPage([a!], { hasMore: false, view: VIEWS.unread });
    expect(get(a!.id)?.is_read).toBe(true);
  });
});

describe('NotificationStore: optimistic changes roll back exactly', () => {
  it('marks unread at once, the badge and its type count up, and undoes exactly that', () => {
    const [a, b] = newestFirst(2, { is_read: true, is_seen: true, type: 'TEMPLATE_APPROVED' });
    const { store, get, badge, counts } = connected([a!, b!]);
    const unreading = store.changeLocally([a!.id], { is_read: false });
    expect(get(a!.id)).toMatchObject({ is_read: false, is_seen: true });
    expect(badge()).toBe(1);
    expect(counts()?.by_type.TEMPLATE_APPROVED).toEqual({ unread: 1, unseen: 0 });
    expect(unreading.rollBack()).toBe(true); // no count since: ask the server
    expect(get(a!.id)?.is_read).toBe(true);
    expect([badge(), counts()?.unread]).toEqual([0, 0]);
  });

  it('a roll back keeps the counts that arrived during the call, never a copy from before', () => {
    const [a, b] = newestFirst(2);
    const { store, send, badge, counts } = connected([a!, b!]);
    const archiving = store.changeLocally([a!.id], { is_archived: true });
    expect([badge(), counts()?.unread, counts()?.unseen]).toEqual([1, 1, 1]);
    const c = item();
    send(created(c)); // another change: the counts now say 3
    send(unreadCount(3));
    send(countsEvent(countsOf({ GENERIC_INFO: [3, 3] })));
    expect(badge()).toBe(2); // the archive is still pending
    expect(archiving.rollBack()).toBe(false);
    expect([badge(), counts()?.unread, counts()?.unseen]).toEqual([3, 3, 3]);
  });

  it('archives at once: the item leaves the inbox for the archived view, and comes back', () => {
    const [a, b] = newestFirst(2);
    const { store, ids } = connected([a!, b!]);
    const archiving = store.changeLocally([a!.id], { is_archived: true });
    expect(ids()).toEqual([b!.id]);
    expect(ids(VIEWS.archived)).toEqual([a!.id]);
    archiving.rollBack();
    expect(ids()).toEqual([a!.id, b!.id]);
  });

  it('deletes at once, and a roll back brings back the copy the events updated meanwhile', () => {
    const [a, b] = newestFirst(2);
    const { store, send, ids, get, badge } = connected([a!, b!]);
    const removing = store.changeLocally([a!.id], { deleted: true });
    expect(ids()).toEqual([b!.id]);
    expect(badge()).toBe(1);
    send(updated({ ...a!, is_read: true, is_seen: true })); // read elsewhere before the delete
    expect(store.has(a!.id)).toBe(false);
    removing.rollBack();
    expect(get(a!.id)).toMatchObject({ is_read: true });
  });

  it("a delete the socket confirmed is not undone by the call's failure (a 504)", () => {
    const [a, b] = newestFirst(2);
    const { store, send, badge } = connected([a!, b!]);
    const removing = store.changeLocally([a!.id], { deleted: true });
    send(deleted(a!.id));
    send(unreadCount(1));
    send(countsEvent(countsOf({ GENERIC_INFO: [1, 1] })));
    expect(removing.rollBack()).toBe(false); // both counts came since: nothing to ask
    expect(store.has(a!.id)).toBe(false);
    expect(badge()).toBe(1);
  });

  it('a failure after the unread count but before the per-type counts asks for the counts', () => {
    const [a, b] = newestFirst(2);
    const { store, send, badge } = connected([a!, b!]);
    const removing = store.changeLocally([a!.id], { deleted: true });
    send(deleted(a!.id));
    send(unreadCount(1));
    expect(removing.rollBack()).toBe(true);
    expect(store.has(a!.id)).toBe(false);
    expect(badge()).toBe(1);
  });

  it('marks seen: the unseen count drops, the unread one does not', () => {
    const [a] = newestFirst(1);
    const { store, badge, counts, get } = connected([a!]);
    store.changeLocally([a!.id], { is_seen: true });
    expect(get(a!.id)).toMatchObject({ is_seen: true, is_read: false });
    expect([badge(), counts()?.unseen, counts()?.by_type.GENERIC_INFO.unseen]).toEqual([1, 0, 0]);
  });

  it("an event that shows a pending change done ends its claim: the roll back leaves the server's word", () => {
    const [a] = newestFirst(1, { is_read: true, is_seen: true });
    const { store, send, get } = connected([a!]);
    const unreading = store.changeLocally([a!.id], { is_read: false });
    send(updated({ ...a!, is_archived: true })); // is_read untouched: the claim stands
    expect(get(a!.id)).toMatchObject({ is_read: false, is_archived: true });
    send(updated({ ...a!, is_read: false, is_archived: true })); // the unread, done
    send(updated({ ...a!, is_read: true, is_archived: true, message: 'read again' }));
    expect(get(a!.id)?.is_read).toBe(true);
    unreading.rollBack();
    expect(get(a!.id)).toMatchObject({ is_read: true, message: 'read again' });
  });

  it('a roll back undoes only the claims the server has not spoken of', () => {
    const [a, b] = newestFirst(2);
    const { store, send, get } = connected([a!, b!]);
    const reading = store.changeLocally([a!.id, b!.id], { is_read: true, is_seen: true });
    send({ event: 'notification.read', payload: { id: b!.id, is_read: true } });
    reading.rollBack();
    expect([get(a!.id)?.is_read, get(b!.id)?.is_read]).toEqual([false, true]);
  });

  it('a committed change whose answer beat its events asks for the counts, then takes them', () => {
    const [a, b] = newestFirst(2);
    const { store, send, badge, counts } = connected([a!, b!]);
    const archiving = store.changeLocally([a!.id], { is_archived: true });
    expect(archiving.commit()).toBe(true);
    expect(badge()).toBe(1);
    send(updated({ ...a!, is_archived: true }));
    send(unreadCount(1));
    send(countsEvent(countsOf({ GENERIC_INFO: [1, 1] })));
    send(countsEvent(countsOf({ GENERIC_INFO: [4, 2] })));
    expect([badge(), counts()?.unseen]).toEqual([1, 2]);
  });

  it('the badge and the counts hold still from the item event to its counts', () => {
    const [a, b] = newestFirst(2, { type: 'CAMPAIGN_ERROR' });
    const { store, send, badge, counts } = connected([a!, b!]);
    store.changeLocally([a!.id], { is_read: true, is_seen: true });
    const seen: string[] = [];
    store.subscribe(() =>
      seen.push(`${badge()} ${counts()?.unseen} ${counts()?.by_type.CAMPAIGN_ERROR.unread}`),
    );
    send({ event: 'notification.read', payload: { id: a!.id, is_read: true } });
    send(updated({ ...a!, is_read: true, is_seen: true }));
    send(unreadCount(1));
    send(countsEvent(countsOf({ CAMPAIGN_ERROR: [1, 1] })));
    send(keepalive);
    expect([badge(), counts()?.unseen]).toEqual([1, 1]);
    expect(seen.filter((line) => line !== '1 1 1')).toEqual([]);
  });

  it('a change the socket confirmed whose counts did not change settles at the next frame', () => {
    const [a] = newestFirst(1, { is_read: true, is_seen: true });
    const { store, send, badge } = connected([a!]);
    store.changeLocally([a!.id], { is_archived: true }); // a read item: no count moves
    send(updated({ ...a!, is_archived: true }));
    send(keepalive);
    send(unreadCount(0));
    expect(badge()).toBe(0);
  });

  it('refreshCounts takes the REST counts, unless the socket sent newer ones meanwhile', async () => {
    const [a] = newestFirst(1);
    const { store, send, badge, counts } = connected([a!]);
    await store.refreshCounts(async () => countsOf({ GENERIC_INFO: [5, 4] }));
    expect([badge(), counts()?.unseen]).toEqual([5, 4]);
    let answer: (counts: Counts) => void = () => undefined;
    const refreshing = store.refreshCounts(() => new Promise((resolve) => (answer = resolve)));
    send(unreadCount(2));
    answer(countsOf({ GENERIC_INFO: [7, 7] }));
    await refreshing;
    expect([badge(), counts()?.unseen]).toEqual([2, 7]); // the counts part was not overtaken
  });
});

describe('NotificationStore: bulk changes', () => {
  it('read-all empties the badge at once, items the store does not hold included', () => {
    const held = newestFirst(2);
    const { store, send, badge, counts } = connected(held);
    send(unreadCount(30)); // 28 more, older than the store holds
    send(countsEvent(countsOf({ GENERIC_INFO: [20, 10], CAMPAIGN_ERROR: [10, 5] })));
    const reading = store.changeAllLocally(
      { archived: false, upTo: held[0]!.id },
      { is_read: true, is_seen: true },
    );
    expect([badge(), counts()?.unseen, counts()?.by_type.CAMPAIGN_ERROR.unread]).toEqual([0, 0, 0]);
    reading.rollBack();
    expect([badge(), counts()?.unseen]).toEqual([30, 15]);
  });

  it('read-all of a category takes off its whole server count, held or not', () => {
    const { store, send, badge, counts } = connected([item()]);
    send(unreadCount(30));
    send(countsEvent(countsOf({ GENERIC_INFO: [20, 10], CAMPAIGN_ERROR: [10, 5] })));
    store.changeAllLocally(
      { archived: false, types: ['CAMPAIGN_ERROR'] },
      { is_read: true, is_seen: true },
    );
    expect([badge(), counts()?.unseen, counts()?.by_type.GENERIC_INFO.unread]).toEqual([
      20, 10, 20,
    ]);
  });

  it('without per-type counts, read-all still empties a badge that counts items not held', () => {
    const store = new NotificationStore();
    store.apply({ event: 'snapshot', payload: [item(), item()] });
    store.apply(unreadCount(30));
    store.changeAllLocally({ archived: false }, { is_read: true, is_seen: true });
    expect(store.getState().unreadCount).toBe(0);
  });

  it('without per-type counts, a category read takes off what it holds', () => {
    const store = new NotificationStore();
    const [error, info] = [item({ type: 'CAMPAIGN_ERROR' }), item()];
    store.apply({ event: 'snapshot', payload: [info, error] });
    store.apply(unreadCount(30));
    store.changeAllLocally({ archived: false, types: ['CAMPAIGN_ERROR'] }, { is_read: true });
    expect(store.getState().unreadCount).toBe(29);
  });

  it('seen-all empties the unseen count at once; an item arriving meanwhile stays unseen', () => {
    const [a, b] = newestFirst(2);
    const { store, send, badge, counts } = connected([a!, b!]);
    const seeing = store.changeAllLocally({ archived: false, upTo: a!.id }, { is_seen: true });
    expect([badge(), counts()?.unseen]).toEqual([2, 0]);
    const c = item();
    send(created(c));
    send(unreadCount(3));
    send(countsEvent(countsOf({ GENERIC_INFO: [3, 3] })));
    expect([badge(), counts()?.unseen]).toEqual([3, 1]);
    expect(store.getState().notificationsById.get(c.id)?.is_seen).toBe(false);
    expect(seeing.rollBack()).toBe(false);
    expect(counts()?.unseen).toBe(3);
  });

  it("read-all of a category empties its counts and leaves the others'", () => {
    const [error, info] = [item({ type: 'CAMPAIGN_ERROR' }), item({ type: 'GENERIC_INFO' })];
    const { store, badge, counts, get } = connected([info, error]);
    const reading = store.changeAllLocally(
      { archived: false, types: ['CAMPAIGN_ERROR', 'CAMPAIGN_SENDING'], upTo: info.id },
      { is_read: true, is_seen: true },
    );
    expect(get(error.id)?.is_read).toBe(true);
    expect(get(info.id)?.is_read).toBe(false);
    expect(badge()).toBe(1);
    expect(counts()?.by_type.CAMPAIGN_ERROR).toEqual({ unread: 0, unseen: 0 });
    expect(counts()?.by_type.GENERIC_INFO).toEqual({ unread: 1, unseen: 1 });
    reading.rollBack();
    expect([badge(), counts()?.by_type.CAMPAIGN_ERROR.unread]).toEqual([2, 1]);
  });

  it('a committed bulk change settles when its counts arrive, and notifications.changed agrees', () => {
    const held = newestFirst(3);
    const { store, send, badge, counts, ids } = connected(held);
    const archiving = store.changeAllLocally(
      { archived: false, upTo: held[0]!.id },
      { is_archived: true },
    );
    expect([badge(), counts()?.unseen, ids()]).toEqual([0, 0, []]);
    expect(archiving.commit()).toBe(true);
    send(changed({ is_archived: true }, { up_to: upTo(held[0]!) }));
    send(unreadCount(0));
    send(countsEvent(countsOf()));
    expect(ids(VIEWS.archived)).toEqual(held.map((shown) => shown.id));
    expect([badge(), counts()?.unseen]).toEqual([0, 0]);
    send(unreadCount(4)); // more work later: the counts are the server's again
    expect(badge()).toBe(4);
  });

  it('archive-all of the read ones moves no count', () => {
    const [a, b] = newestFirst(2);
    const { store, badge, ids } = connected([a!, { ...b!, is_read: true, is_seen: true }]);
    store.changeAllLocally({ archived: false, isRead: true }, { is_archived: true });
    expect(ids()).toEqual([a!.id]);
    expect(badge()).toBe(1);
  });

  it('delete-all of the archived view hides its items and moves no count', () => {
    const [a, b] = newestFirst(2);
    const { store, send, badge, ids } = connected([a!]);
    send(updated({ ...b!, is_archived: true }));
    const deleting = store.changeAllLocally({ archived: true }, { deleted: true });
    expect(ids(VIEWS.archived)).toEqual([]);
    expect([ids(), badge()]).toEqual([[a!.id], 1]);
    deleting.rollBack();
    expect(ids(VIEWS.archived)).toEqual([b!.id]);
  });

  it('acts only on items at or older than up_to', () => {
    const [newer, a] = newestFirst(2);
    const { store, get } = connected([newer!, a!]);
    store.changeAllLocally({ archived: false, upTo: a!.id }, { is_read: true, is_seen: true });
    expect(get(newer!.id)?.is_read).toBe(false);
    expect(get(a!.id)?.is_read).toBe(true);
  });
});

describe('NotificationStore: views', () => {
  it('derives each view from the one store, and pages each on its own', () => {
    const [a, b] = newestFirst(2, { type: 'TEMPLATE_REJECTED' });
    const { store, send } = connected([a!, b!]);
    const templates = ofTypes(['TEMPLATE_APPROVED', 'TEMPLATE_REJECTED']);
    expect(store.view(templates)).toMatchObject({ hasMore: true, isLoadingMore: false });
    store.loadingMore(templates);
    expect(store.view(templates).isLoadingMore).toBe(true);
    expect(store.getState().isLoadingMore).toBe(false); // the inbox's own paging
    const [older] = newestFirst(1, {
      type: 'TEMPLATE_APPROVED',
      created_at: '2020-01-01T00:00:00Z',
    });
    store.addPage([older!], { hasMore: false, view: templates });
    expect(store.items(templates).map((shown) => shown.id)).toEqual([a!.id, b!.id, older!.id]);
    expect(store.view(templates).hasMore).toBe(false);
    send(updated({ ...a!, is_archived: true }));
    expect(store.items(templates)).toHaveLength(2);
  });

  it("leaves out of a view the older items another view's pages brought, until it pages there", () => {
    const held = newestFirst(3);
    const { store } = connected(held.slice(0, 2), { snapshotSize: 2 });
    const [old] = newestFirst(1, { created_at: '2020-01-01T00:00:00Z' });
    store.addPage([old!], { hasMore: true, view: VIEWS.unread });
    expect(store.items(VIEWS.unread).map((shown) => shown.id)).toContain(old!.id);
    expect(store.items().map((shown) => shown.id)).not.toContain(old!.id); // a hole above it
    store.addPage([held[2]!, old!], { hasMore: false });
    expect(store.items().map((shown) => shown.id)).toContain(old!.id);
  });

  it('a view of an inbox held to its end has nothing more to page', () => {
    const { store } = connected([item()]);
    store.addPage([], { hasMore: false });
    expect(store.view(VIEWS.unseen).hasMore).toBe(false);
    expect(store.view(VIEWS.archived).hasMore).toBe(true);
  });

  it("keeps a view's state object while nothing changes", () => {
    const { store } = connected([item()]);
    expect(store.view(VIEWS.unread)).toBe(store.view({ isRead: false }));
  });

  it("names the newest held item of a view's half for up_to", () => {
    const [archived, a] = newestFirst(2);
    const { store, send } = connected([a!]);
    send(updated({ ...archived!, is_archived: true }));
    expect(store.newestId()).toBe(a!.id);
    expect(store.newestId(VIEWS.archived)).toBe(archived!.id);
  });
});
