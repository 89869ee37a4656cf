/* global document */
import { createElement as h } from 'react';
import { createRoot } from 'react-dom/client';

import { App } from './bell.js';

createRoot(document.getElementById('root')).render(
  h(App, { baseUrl: 'https://notifications.example.com' }),
);
