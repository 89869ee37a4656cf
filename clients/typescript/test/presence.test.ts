import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { Presence, PRESENCE_MS } from '../src/presence.js';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('Presence', () => {
  it('says when a tab has just been shown, not when it stays visible', () => {
    const presence = new Presence(1_000, Date.now);
    expect(presence.see('b', true)).toBe(true);
    expect(presence.see('b', true)).toBe(false);
    expect(presence.see('b', false)).toBe(false);
    expect(presence.see('b', true)).toBe(true);
  });

  it('counts the leader’s own tab and every other tab heard from lately', () => {
    const presence = new Presence(1_000, Date.now);
    expect(presence.anyVisible(true)).toBe(true);
    expect(presence.anyVisible(false)).toBe(false);
    presence.see('b', true);
    presence.see('c', false);
    expect(presence.anyVisible(false)).toBe(true);
    presence.forget('b');
    expect(presence.anyVisible(false)).toBe(false);
  });

  it('forgets a visible tab silent for three presence periods: it closed without a bye', () => {
    const presence = new Presence(1_000, Date.now);
    presence.see('b', true);
    vi.advanceTimersByTime(3 * PRESENCE_MS);
    expect(presence.anyVisible(false)).toBe(true);
    vi.advanceTimersByTime(1);
    expect(presence.anyVisible(false)).toBe(false);
    expect(presence.see('b', true)).toBe(true); // forgotten: its next word is news
  });

  it('runs one grace at a time, and cancels it', () => {
    const presence = new Presence(1_000, Date.now);
    const expired = vi.fn();
    presence.startGrace(expired);
    vi.advanceTimersByTime(600);
    presence.startGrace(expired); // already running: it is not restarted
    vi.advanceTimersByTime(400);
    expect(expired).toHaveBeenCalledOnce();
    presence.startGrace(expired);
    presence.cancelGrace();
    vi.advanceTimersByTime(5_000);
    expect(expired).toHaveBeenCalledOnce();
  });

  it('forgets every tab and the grace on reset()', () => {
    const presence = new Presence(1_000, Date.now);
    const expired = vi.fn();
    presence.see('b', true);
    presence.startGrace(expired);
    presence.reset();
    expect(presence.anyVisible(false)).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });
});
