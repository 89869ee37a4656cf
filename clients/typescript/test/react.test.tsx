// @vitest-environment happy-dom
import { act, StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { useNotifications, type UseNotifications } from '../src/react.js';
import { FakeWebSocket, item } from './fakes.js';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

let latest: UseNotifications | undefined;
let rerender: () => void = () => undefined;
let tokenCalls = 0;
let signedOut = false;

function Bell() {
  const [renders, setRenders] = useState(0);
  rerender = () => setRenders((n) => n + 1);
  // A new getToken function on every render, as an inline arrow would be.
  const getToken = () => {
    if (signedOut) throw new Error('no session');
    return `token-${renders}-${++tokenCalls}`;
  };
  latest = useNotifications('http://x', getToken, {
    socket: { createWebSocket: (url) => new FakeWebSocket(url) },
    fetch: async () => new Response('{}', { status: 200 }),
  });
  return <span>{latest.unreadCount}</span>;
}

const settle = () => act(async () => await new Promise((r) => setTimeout(r, 0)));

let container: HTMLElement;
let root: ReturnType<typeof createRoot>;

beforeEach(() => {
  FakeWebSocket.created = [];
  tokenCalls = 0;
  signedOut = false;
  container = document.createElement('div');
  root = createRoot(container);
});
afterEach(() => act(() => root.unmount()));

describe('useNotifications', () => {
  it('renders the live list and badge, and survives re-renders without reconnecting', async () => {
    act(() => root.render(<Bell />));
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    const ws = FakeWebSocket.latest();
    const first = item();
    act(() => {
      ws.open();
      ws.receive({ event: 'snapshot', payload: [first] });
      ws.receive({ event: 'unread_count.updated', payload: { count: 1 } });
    });
    expect(latest?.items).toEqual([first]);
    expect(latest?.connection).toBe('open');
    expect(container.textContent).toBe('1');

    act(() => rerender());
    act(() => rerender());
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);

    const second = item();
    act(() => ws.receive({ event: 'notification.created', payload: second }));
    expect(latest?.items.map((i) => i.id)).toEqual([second.id, first.id]);
  });

  it('uses the newest getToken for the next connection', async () => {
    act(() => root.render(<Bell />));
    await settle();
    act(() => rerender());
    await settle();
    act(() => FakeWebSocket.latest().serverClose(4401));
    await act(async () => await new Promise((r) => setTimeout(r, 1300)));
    expect(FakeWebSocket.created).toHaveLength(2);
    expect(FakeWebSocket.latest().token).toMatch(/^token-1-/);
  });

  it('closes its socket on unmount and reconnects under StrictMode', async () => {
    act(() =>
      root.render(
        <StrictMode>
          <Bell />
        </StrictMode>,
      ),
    );
    await settle();
    const open = FakeWebSocket.created.filter((ws) => ws.closedWith === undefined);
    expect(open).toHaveLength(1);
    act(() => root.unmount());
    expect(open[0]?.closedWith).toBe(1000);
    root = createRoot(container);
  });

  it('marks read through the store at once', async () => {
    act(() => root.render(<Bell />));
    await settle();
    const held = item();
    act(() => {
      FakeWebSocket.latest().receive({ event: 'snapshot', payload: [held] });
      FakeWebSocket.latest().receive({ event: 'unread_count.updated', payload: { count: 1 } });
    });
    await act(async () => await latest?.markRead(held.id));
    expect(latest?.unreadCount).toBe(0);
    expect(latest?.items[0]?.is_read).toBe(true);
  });

  it('tells signed out from offline, and retryNow() reconnects', async () => {
    signedOut = true;
    act(() => root.render(<Bell />));
    await settle();
    expect(latest?.connection).toBe('unauthorized');
    expect(latest?.authError?.reason).toBe('token_unavailable');
    expect(FakeWebSocket.created).toHaveLength(0);
    signedOut = false;
    act(() => latest?.retryNow());
    await settle();
    expect(FakeWebSocket.created).toHaveLength(1);
    expect(latest?.connection).toBe('connecting');
    expect(latest?.authError).toBeNull();
  });
});
