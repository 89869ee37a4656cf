import { describe, expect, it } from 'vitest';

import { NotificationStore } from '../src/store.js';
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

  it('merges a snapshot into what it holds instead of wiping older items', () => {
    const store = new NotificationStore();
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
    expect(store.items()).toEqual([{ ...held, is_read: true }]);
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
    const undo = store.markReadLocally([unread.id, read.id]);
    expect(store.getState().unreadCount).toBe(3);
    expect(store.items().every((i) => i.is_read)).toBe(true);
    undo();
    expect(store.getState().unreadCount).toBe(4);
    expect(store.items().find((i) => i.id === unread.id)?.is_read).toBe(false);
    expect(store.items().find((i) => i.id === read.id)?.is_read).toBe(true);
  });
});
