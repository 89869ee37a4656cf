import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';
import { describe, expect, it } from 'vitest';

// @ts-expect-error: a plain ES module script, without types
import { readmeBlocks, writeReadmeApp } from '../scripts/readme-blocks.mjs';

const packageDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
// Inside the package, so that `react` and its types resolve from its node_modules.
const appDir = path.join(packageDir, 'node_modules/.cache/readme-app');

describe('the README', () => {
  it('has its TypeScript blocks: the provider, the list, the tabs, the bell, the plain client and its views', () => {
    expect(readmeBlocks().map((block: { file: string }) => block.file)).toEqual([
      'block-1.tsx',
      'block-2.tsx',
      'block-3.tsx',
      'block-4.tsx',
      'block-5.ts',
      'block-6.ts',
    ]);
  });

  it('type-checks as written, strict, as the modules of one app', () => {
    rmSync(appDir, { recursive: true, force: true });
    mkdirSync(appDir, { recursive: true });
    const files: string[] = writeReadmeApp(appDir);
    const program = ts.createProgram(
      files.map((file) => path.join(appDir, file)),
      {
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.ESNext,
        moduleResolution: ts.ModuleResolutionKind.Bundler,
        lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
        jsx: ts.JsxEmit.ReactJSX,
        strict: true,
        noUnusedLocals: true,
        noEmit: true,
        skipLibCheck: true,
        // What `npm install` of the tarball gives the app: the package's two entries.
        paths: {
          '@campana/client': [path.join(packageDir, 'src/index.ts')],
          '@campana/client/react': [path.join(packageDir, 'src/react.ts')],
        },
      },
    );
    const problems = ts.getPreEmitDiagnostics(program).map((diagnostic) => {
      const where = diagnostic.file
        ? `${path.basename(diagnostic.file.fileName)}:${diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0).line + 1}`
        : '';
      return `${where} ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')}`;
    });
    expect(problems).toEqual([]);
  }, 60_000);
});
