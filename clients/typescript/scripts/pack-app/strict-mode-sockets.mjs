// Mounts and unmounts the provider 20 times under StrictMode (each effect runs, is cleaned up
// and runs again), at varying lifetimes, and counts the WebSockets left open.
import console from 'node:console';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';

import { Window } from 'happy-dom';

const MOUNTS = 20;

class CountingWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static open = 0;
  static opened = 0;
  static peak = 0;

  readyState = CountingWebSocket.CONNECTING;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;

  constructor(url) {
    this.url = url;
    CountingWebSocket.open += 1;
    CountingWebSocket.opened += 1;
    CountingWebSocket.peak = Math.max(CountingWebSocket.peak, CountingWebSocket.open);
  }

  send() {}

  close() {
    if (this.readyState === CountingWebSocket.CLOSED) return;
    this.readyState = CountingWebSocket.CLOSED;
    CountingWebSocket.open -= 1;
  }
}

const window = new Window({ url: 'http://localhost:3000/' });
Object.assign(globalThis, {
  window,
  document: window.document,
  WebSocket: CountingWebSocket,
  IS_REACT_ACT_ENVIRONMENT: true,
});
// Node 20 has no navigator; newer Nodes define it as a getter.
Object.defineProperty(globalThis, 'navigator', { value: window.navigator, configurable: true });

// Imported only now: react-dom looks for a DOM when it loads.
const { act, createElement: h } = await import('react');
const { createRoot } = await import('react-dom/client');
const { App } = await import('./bell.js');

async function waitFor(condition, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await act(() => sleep(10));
}

const container = window.document.createElement('div');
window.document.body.append(container);
let mountsWithSocket = 0;
for (let mount = 0; mount < MOUNTS; mount += 1) {
  const root = createRoot(container);
  await act(async () => root.render(h(App, { baseUrl: 'http://localhost:1' })));
  // The first mount waits for its socket; the others unmount before, during or after it opens.
  if (mount === 0) await waitFor(() => CountingWebSocket.open > 0, 3000);
  else await act(() => sleep((mount % 4) * 5));
  if (CountingWebSocket.open > 0) mountsWithSocket += 1;
  await act(async () => root.unmount());
}
// A socket opened late, by a token that resolved after the unmount, would show up here.
await sleep(300);
await window.happyDOM.close();

const { open, opened, peak } = CountingWebSocket;
const summary = `${opened} sockets opened over ${MOUNTS} mounts (${mountsWithSocket} mounts saw one open, at most ${peak} at once), ${open} left open`;
if (mountsWithSocket === 0) {
  console.error(`no socket was opened while the provider was mounted: ${summary}`);
  process.exit(1);
}
if (open !== 0) {
  console.error(`sockets leaked: ${summary}`);
  process.exit(1);
}
console.log(summary);
// A leaked timer or channel must not hang CI: this test is about sockets.
process.exit(0);
