import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, CLI } from '../../helpers/paths.js';

const BUNDLE = path.join(ROOT, 'dist', 'bundle');
const THREADS = ['vcpu-thread.js', 'multifd-channel-thread.js', 'blk-dataplane-thread.js'];

/** The specifiers `file` imports: static (import/export ... from) and dynamic (import('...')). */
function imports(file: string): { static: string[]; dynamic: string[] } {
  const text = readFileSync(path.join(BUNDLE, file), 'utf8');
  return {
    static: [...text.matchAll(/^(?:import|export)\b[^'"]*?\bfrom\s*["']([^"']+)["']/gm)].map((m) => m[1]!),
    dynamic: [...text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1]!),
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
    for (const f of readdirSync(BUNDLE)) {
      const { static: s, dynamic: d } = imports(f);
      for (const spec of [...s, ...d]) {
        if (spec.startsWith('node:')) continue;
        expect(spec, `${f} imports ${spec}`).toMatch(/^\.\/[^/]+\.js$/);
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
    const atStart = loadedAtStart('tsvmm.js');
    expect([...atStart].filter((f) => f.endsWith('.js')).sort()).toEqual(['tsvmm-core.js', 'tsvmm.js']);
    for (const heavy of ['node:net', 'node:tls', 'node:crypto', 'node:dgram', 'node:fs/promises', 'node:events']) {
      expect(atStart.has(heavy), heavy).toBe(false);
    }
    // ... which are there, imported when the options name them.
    expect(imports('tsvmm-core.js').dynamic.length).toBeGreaterThanOrEqual(5);
  });

  it('is what bin/tsvmm.js runs, and finds the package from dist/bundle/', () => {
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
