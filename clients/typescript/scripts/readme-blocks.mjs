// The README's ```ts and ```tsx blocks, as the modules of an app: each block a file, and an
// entry that imports them all and renders the React sample. Shared by the README test
// (type-checks them against src/) and the pack test (builds them against the tarball).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** Every ```ts / ```tsx block of the package README, in order. */
export function readmeBlocks(readme = path.join(packageDir, 'README.md')) {
  const text = readFileSync(readme, 'utf8');
  return [...text.matchAll(/^```(tsx?)\n([\s\S]*?)^```$/gm)].map(([, lang, code], index) => ({
    file: `block-${index + 1}.${lang}`,
    code,
  }));
}

/** Writes the blocks and `main.tsx` into `dir`; returns the files written. */
export function writeReadmeApp(dir) {
  const blocks = readmeBlocks();
  const imports = blocks.map(
    ({ file }, index) =>
      `import * as block${index + 1} from './${file.replace(/\.tsx?$/, '.js')}';`,
  );
  const main = `${imports.join('\n')}
import { createElement as h } from 'react';
import { createRoot } from 'react-dom/client';

// Every block is used: the first that exports Root wraps the first that exports a list.
const blocks: Record<string, unknown>[] = [${blocks.map((_, i) => `block${i + 1}`).join(', ')}];
const Root = blocks.map((b) => b.Root).find(Boolean) as (props: {
  user: { id: string };
  children: unknown;
}) => unknown;
const List = blocks.map((b) => b.NotificationList).find(Boolean) as () => unknown;
const Badge = blocks.map((b) => b.BellBadge).find(Boolean) as () => unknown;
const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    h(Root as never, { user: { id: 'user-1' } }, h(Badge as never), h(List as never)),
  );
}
`;
  for (const { file, code } of blocks) writeFileSync(path.join(dir, file), code);
  writeFileSync(path.join(dir, 'main.tsx'), main);
  return [...blocks.map(({ file }) => file), 'main.tsx'];
}
