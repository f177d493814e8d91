import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, CLI } from '../../helpers/paths.js';

const BUNDLE = path.join(ROOT, 'dist', 'bundle');
const THREADS = ['vcpu-thread.cjs', 'multifd-channel-thread.cjs', 'blk-dataplane-thread.cjs', 'prestarted-thread.cjs'];

/**
 * The specifiers `file` requires (the bundles are CommonJS): at start (a top-level `require(...)`,
 * rolldown's form for a static import) and on demand (`Promise.resolve().then(() => require(...))`, its
 * form for import()). `all` leaves out rolldown's import.meta.url, `require("url").pathToFileURL(__filename)`;
 * any other require() or import() would fall in neither list and fail the tests below.
 */
function imports(file: string): { static: string[]; dynamic: string[]; all: string[] } {
  const text = readFileSync(path.join(BUNDLE, file), 'utf8');
  const spec = (m: RegExpMatchArray) => m[1]!;
  return {
    static: [...text.matchAll(/^(?:const|let|var) [\w$]+ = require\("([^"]+)"\);$/gm)].map(spec),
    dynamic: [...text.matchAll(/Promise\.resolve\(\)\.then\(\(\) => require\("([^"]+)"\)\)/g)].map(spec),
    all: [...text.replaceAll('require("url").pathToFileURL(__filename)', '').matchAll(/\b(?:require|import)\(\s*["']([^"']+)["']\s*\)/g)].map(spec),
  };
}

/** The files and Node built-ins loaded at start from `file`: its static imports, followed. */
function loadedAtStart(file: string, seen = new Set<string>()): Set<string> {
  seen.add(file);
  for (const s of imports(file).static) {
    const next = s.startsWith('./') ? s.slice(2) : s;
    if (!seen.has(next)) {
      if (s.startsWith('./')) loadedAtStart(next, seen);
      else seen.add(next);
    }
  }
  return seen;
}

describe('the bundled CLI (scripts/bundle.mjs, run by npm test / npm run build)', () => {
  it('is self-contained: every file imports only Node built-ins and files beside it', () => {
    for (const f of readdirSync(BUNDLE).filter((f) => f.endsWith('.cjs'))) {
      const { static: s, dynamic: d, all } = imports(f);
      expect(all.length, `${f}: every require() is a static or a dynamic import`).toBe(s.length + d.length);
      for (const spec of all) {
        if (spec.startsWith('node:')) continue;
        expect(spec, `${f} imports ${spec}`).toMatch(/^\.\/[^/]+\.cjs$/);
        expect(existsSync(path.join(BUNDLE, spec)), `${f} imports ${spec}`).toBe(true);
      }
    }
  });

  it('gives each worker thread exactly one file', () => {
    for (const t of THREADS) {
      const { static: s, dynamic: d } = imports(t);
      expect(s.length, t).toBeGreaterThan(0);
      expect([...s, ...d].filter((x) => !x.startsWith('node:')), t).toEqual([]);
    }
  });

  it('starts `run` without migration, QMP, TLS or the virtio backends (nor Node\'s net, tls, crypto, dgram)', () => {
    const atStart = loadedAtStart('tsvmm.cjs');
    expect([...atStart].filter((f) => f.endsWith('.cjs')).sort()).toEqual(['tsvmm-core.cjs', 'tsvmm-rolldown-runtime.cjs', 'tsvmm.cjs']);
    for (const heavy of ['node:net', 'node:tls', 'node:crypto', 'node:dgram', 'node:fs/promises', 'node:events']) {
      expect(atStart.has(heavy), heavy).toBe(false);
    }
    // ... which are there, imported when the options name them.
    expect(imports('tsvmm-core.cjs').dynamic.length).toBeGreaterThanOrEqual(5);
  });

  it('loads the main thread\'s files from V8 code caches that V8 accepts (bin/bundle-loader.cjs)', () => {
    const mainFiles = readdirSync(BUNDLE).filter((f) => f.endsWith('.cjs') && !THREADS.includes(f));
    for (const f of mainFiles) expect(existsSync(path.join(BUNDLE, `${f}.cache`)), `${f}.cache`).toBe(true);
    // A fresh process, as bin/tsvmm.cjs starts: every file loaded through the hook, none rejected.
    // Then a cache made by a process with V8's default flags must still be accepted: a loader that
    // changed a flag would make V8 reject Node's own caches too (each worker then started ~30 ms later).
    const probe = 'module.exports = 1;';
    const made = spawnSync(process.execPath, ['-e', `process.stdout.write(new (require('node:vm').Script)(${JSON.stringify(probe)}).createCachedData().toString('base64'))`], { encoding: 'utf8' });
    const script = `
      const loader = require(${JSON.stringify(path.join(ROOT, 'bin', 'bundle-loader.cjs'))});
      const rejected = loader.installBundleLoader(${JSON.stringify(BUNDLE)});
      const files = ${JSON.stringify(mainFiles)};
      for (const f of files) require(${JSON.stringify(BUNDLE)} + '/' + f);
      const probe = new (require('node:vm').Script)(${JSON.stringify(probe)}, { cachedData: Buffer.from(${JSON.stringify(made.stdout)}, 'base64') });
      process.stdout.write(JSON.stringify({ rejected, probeRejected: probe.cachedDataRejected }));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ rejected: [], probeRejected: false });
  });

  it('ignores a code cache that was not made from the bundle as it is now', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bundle-cache-'));
    const file = path.join(dir, 'm.cjs');
    writeFileSync(file, 'module.exports = () => 1;\n');
    const make = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'code-cache.cjs'), file], { encoding: 'utf8' });
    expect(make.status, make.stderr).toBe(0);
    // Same length, other text, newer mtime: V8 alone would take the cache (it checks the length).
    writeFileSync(file, 'module.exports = () => 2;\n');
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    const script = `
      require(${JSON.stringify(path.join(ROOT, 'bin', 'bundle-loader.cjs'))}).installBundleLoader(${JSON.stringify(dir)});
      process.stdout.write(String(require(${JSON.stringify(file)})()));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.stdout).toBe('2');
  });

  it('is what bin/tsvmm.cjs runs, and finds the package from dist/bundle/', () => {
    const r = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' });
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(r.stdout).toBe(`tsvmm ${pkg.version}\n`);
    // A missing kernel is reported by the CLI after the vCPU thread was prestarted: the process still
    // exits at once with the usage status.
    const bad = spawnSync(process.execPath, [CLI, 'run', path.join(ROOT, 'no-such-kernel')], { encoding: 'utf8', timeout: 20_000 });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/kernel file .*no-such-kernel does not exist/);
  });
});
