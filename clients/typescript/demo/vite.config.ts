import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vite';

// Built into the Python package, so that `campana serve` shows the demo at `/`.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  build: {
    outDir: fileURLToPath(new URL('../../../src/campana/static', import.meta.url)),
    emptyOutDir: true,
    assetsDir: 'assets',
  },
});
