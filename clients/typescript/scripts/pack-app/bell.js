// The smallest real consumer of the React entry: a badge that reads both hooks.
import { NotificationsProvider, useNotifications, useUnreadCount } from '@campana/client/react';
import { createElement as h, StrictMode } from 'react';

function Bell() {
  const { items, connection } = useNotifications();
  const unread = useUnreadCount();
  return h('button', { title: connection }, `${unread} unread of ${items.length}`);
}

export function App({ baseUrl }) {
  return h(StrictMode, null, h(NotificationsProvider, { baseUrl, getToken: () => 't' }, h(Bell)));
}
