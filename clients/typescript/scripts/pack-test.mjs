// The package as a user gets it: `npm pack` (its prepack builds), then a fresh app installs
// the tarball and uses it the three ways users do: bundled by Vite, rendered by React
// (StrictMode, mounted and unmounted until a leaked socket would show), required from
// CommonJS; and it builds the README's code blocks as an app. Run from clients/typescript:
// `npm run test:pack`.
import { spawnSync } from 'node:child_process';
import console from 'node:console';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

import { writeReadmeApp } from './readme-blocks.mjs';

const scriptsDir = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.dirname(scriptsDir);
const appFiles = path.join(scriptsDir, 'pack-app');
const devDependencies = JSON.parse(
  readFileSync(path.join(packageDir, 'package.json'), 'utf8'),
).devDependencies;

const REQUIRED_FILES = [
  'package.json',
  'README.md',
  'LICENSE',
  'dist/index.js',
  'dist/index.d.ts',
  'dist/react.js',
  'dist/react.d.ts',
  'dist/cjs/package.json',
  'dist/cjs/index.js',
  'dist/cjs/index.d.ts',
  'dist/cjs/react.js',
  'dist/cjs/react.d.ts',
];

// Run by `node -e` (CommonJS) in the app, where react is installed: the root entry must
// not need it, since react is an optional peer.
const REQUIRE_ROOT_ENTRY = `
const client = require('@campana/client');
if (typeof client.NotificationCenter !== 'function') {
  throw new Error('the CommonJS build exports no NotificationCenter');
}
const reactFiles = Object.keys(require.cache).filter((file) => /[\\/]node_modules[\\/]react[\\/]/.test(file));
if (reactFiles.length) throw new Error('requiring the root entry loaded react: ' + reactFiles[0]);
`;

const failures = [];

/** Runs a command; its output is shown only when it fails. */
function run(command, args, { cwd, timeoutSeconds = 60 } = {}) {
  const result = spawnSync(command, args, {
    cwd,
    encoding: 'utf8',
    timeout: timeoutSeconds * 1000,
    killSignal: 'SIGKILL',
  });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim();
  if (result.error?.code === 'ETIMEDOUT') {
    throw new Error(`${command} ${args.join(' ')} took over ${timeoutSeconds} s\n${output}`);
  }
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited with ${result.status}\n${output}`);
  }
  return result.stdout;
}

function step(name, check) {
  try {
    check();
    console.log(`ok    ${name}`);
  } catch (error) {
    failures.push(name);
    console.log(`FAIL  ${name}\n${indent(error instanceof Error ? error.message : error)}`);
  }
}

function indent(text) {
  return String(text)
    .split('\n')
    .map((line) => `      ${line}`)
    .join('\n');
}

function listFiles(dir, prefix = '') {
  return spawnSync('find', ['.', '-type', 'f'], { cwd: dir, encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean)
    .map((file) => path.posix.join(prefix, file.slice(2)));
}

function checkTarballFiles(unpacked) {
  const shipped = new Set(listFiles(unpacked));
  const missing = REQUIRED_FILES.filter((file) => !shipped.has(file));
  if (missing.length) throw new Error(`missing from the tarball: ${missing.join(', ')}`);
  const cjsMarker = JSON.parse(readFileSync(path.join(unpacked, 'dist/cjs/package.json'), 'utf8'));
  if (cjsMarker.type !== 'commonjs') throw new Error('dist/cjs/package.json is not type commonjs');
}

/** Every source a shipped map names must be in the tarball, or debuggers show nothing. */
function checkSourceMaps(unpacked) {
  const maps = listFiles(unpacked).filter((file) => file.endsWith('.map'));
  if (!maps.length) throw new Error('no source maps shipped');
  const dangling = [];
  for (const map of maps) {
    const { sources } = JSON.parse(readFileSync(path.join(unpacked, map), 'utf8'));
    for (const source of sources) {
      const resolved = path.join(unpacked, path.dirname(map), source);
      if (!resolved.startsWith(unpacked) || !existsSync(resolved)) {
        dangling.push(`${map} -> ${source}`);
      }
    }
  }
  if (dangling.length) throw new Error(`sources not in the tarball:\n${dangling.join('\n')}`);
}

function createApp(appDir, tarball) {
  const pinned = (name) => {
    if (!devDependencies[name]) throw new Error(`${name} is not a devDependency`);
    return devDependencies[name];
  };
  cpSync(appFiles, appDir, { recursive: true });
  const manifest = {
    name: 'campana-pack-test-app',
    private: true,
    type: 'module',
    dependencies: {
      '@campana/client': `file:${tarball}`,
      '@types/react': pinned('@types/react'),
      '@types/react-dom': pinned('@types/react-dom'),
      'happy-dom': pinned('happy-dom'),
      react: pinned('react'),
      'react-dom': pinned('react-dom'),
      typescript: pinned('typescript'),
      vite: pinned('vite'),
    },
  };
  writeFileSync(path.join(appDir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], {
    cwd: appDir,
    timeoutSeconds: 90,
  });
}

const workDir = mkdtempSync(path.join(tmpdir(), 'campana-pack-'));
const unpacked = path.join(workDir, 'package');
const appDir = path.join(workDir, 'app');
let tarball = null;

step('npm pack (prepack builds dist/)', () => {
  const packed = JSON.parse(
    run('npm', ['pack', '--json', '--pack-destination', workDir], {
      cwd: packageDir,
      timeoutSeconds: 60,
    }),
  );
  tarball = path.join(workDir, packed[0].filename);
  run('tar', ['-xzf', tarball, '-C', workDir]);
});

if (tarball) {
  step('tarball lists ESM, CommonJS, types, README.md and LICENSE', () =>
    checkTarballFiles(unpacked),
  );
  step("every source map's sources are in the tarball", () => checkSourceMaps(unpacked));

  let installed = false;
  step('fresh app installs the tarball', () => {
    createApp(appDir, tarball);
    installed = true;
  });

  if (installed) {
    step('(a) vite build of a React app using the provider and hooks', () => {
      run(path.join(appDir, 'node_modules/.bin/vite'), ['build', '--logLevel', 'error'], {
        cwd: appDir,
      });
    });
    step('(b) StrictMode, mounted and unmounted 20 times, leaves no socket open', () => {
      console.log(indent(run('node', ['strict-mode-sockets.mjs'], { cwd: appDir }).trim()));
    });
    step("(c) require('@campana/client') from CommonJS, without loading react", () => {
      run('node', ['-e', REQUIRE_ROOT_ENTRY], { cwd: appDir });
    });
    step('(d) the React entry loads as an ES module and from CommonJS', () => {
      run('node', ['--input-type=module', '-e', "await import('@campana/client/react')"], {
        cwd: appDir,
      });
      run('node', ['-e', "require('@campana/client/react')"], { cwd: appDir });
    });
    step("(e) the README's code blocks type-check and build as an app, as written", () => {
      const readmeDir = path.join(appDir, 'readme');
      mkdirSync(readmeDir);
      writeReadmeApp(readmeDir);
      const compilerOptions = {
        target: 'ES2022',
        module: 'ESNext',
        moduleResolution: 'Bundler',
        lib: ['ES2022', 'DOM'],
        jsx: 'react-jsx',
        strict: true,
        noEmit: true,
        skipLibCheck: true,
      };
      writeFileSync(
        path.join(readmeDir, 'tsconfig.json'),
        JSON.stringify({ compilerOptions, include: ['*.ts', '*.tsx'] }),
      );
      writeFileSync(
        path.join(readmeDir, 'index.html'),
        '<!doctype html><div id="root"></div><script type="module" src="./main.tsx"></script>\n',
      );
      run(path.join(appDir, 'node_modules/.bin/tsc'), ['-p', readmeDir]);
      run(
        path.join(appDir, 'node_modules/.bin/vite'),
        ['build', '--logLevel', 'error', readmeDir],
        {
          cwd: appDir,
        },
      );
    });
  }
}

if (failures.length) {
  console.log(`\npack test: ${failures.length} failed (${failures.join('; ')})`);
  console.log(`scratch files kept in ${workDir}`);
  process.exit(1);
}
rmSync(workDir, { recursive: true, force: true });
console.log('\npack test: all passed');
