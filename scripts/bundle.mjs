#!/usr/bin/env node
// Bundles the compiled CLI (dist/) into one self-contained file per thread in dist/bundle/: the main
// thread's tsvmm.cjs and each worker thread's body. Why: Node resolves, stats and reads every ES module
// of a graph one file at a time, and the CLI's graph is ~70 modules (the vCPU thread's ~20 more, loaded
// again in that thread). On a slow file system (9p in the nested-KVM VM) that took ~11 s of a 13 s
// launch; one file per thread takes one open and one read. Each file is built alone (no chunks shared
// between threads). The CLI's dynamic imports (migration, control plane, TLS, virtio backends: see
// src/cli/main.ts) become chunks of their own, tsvmm-*.cjs, read only when the options need them; the
// worker threads have none, so each is exactly one file. Run after `tsc` (npm run build / pretest /
// prepare do).
//
// The bundles are CommonJS although the sources are ES modules: a process (or worker) whose entry is
// CommonJS never starts Node's ES module loader, which costs every thread more than its own bundle
// does (in nested KVM, one L1 CPU: Linux's banner 2.73 s -> 2.53 s, main thread and vCPU thread
// together). import() becomes require() and import.meta.url the file's URL; nothing here uses
// top-level await, which CommonJS could not express (rolldown would refuse).
import { rolldown } from 'rolldown';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const out = path.join(dist, 'bundle');

/** Output name -> compiled entry module. The thread names match src/kvm/thread-script.ts. */
const ENTRIES = {
  tsvmm: 'cli/main.js',
  'vcpu-thread': 'vcpu/vcpu-thread.js',
  'multifd-channel-thread': 'migration/multifd-channel-thread.js',
  'blk-dataplane-thread': 'machine/blk-dataplane-thread.js',
  // Loaded by bin/tsvmm.cjs before the CLI, to start the first vCPU thread early.
  'prestarted-thread': 'vcpu/prestarted-thread.js',
};

/**
 * The modules `entry` imports statically, directly or not (tsc writes each as `import ... from './x.js'`
 * on its own line; `import('...')` is dynamic and not followed). These all load at start, so they go
 * in one chunk: rolldown would otherwise split out every module that a dynamic chunk shares.
 */
function staticClosure(entry) {
  const seen = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(/^(?:import|export)\s[^;]*?\sfrom\s+'(\.{1,2}\/[^']+)';/gms)) {
      if (!/^(?:import|export)\s+type\s/.test(m[0])) visit(path.resolve(path.dirname(file), m[1]));
    }
  };
  visit(entry);
  return seen;
}

rmSync(out, { recursive: true, force: true });
for (const [name, entry] of Object.entries(ENTRIES)) {
  const input = path.join(dist, entry);
  const atStart = staticClosure(input);
  const bundle = await rolldown({
    input,
    platform: 'node',
    // Node's own modules stay imports; everything of ours is inlined.
    external: [/^node:/],
    logLevel: 'warn',
  });
  await bundle.write({
    dir: out, entryFileNames: `${name}.cjs`, chunkFileNames: `${name}-[name].cjs`, format: 'cjs', sourcemap: false,
    // rolldown's runtime (CommonJS interop helpers, ~1.5 KB) stays a chunk of its own, also read at start.
    codeSplitting: { groups: [{ name: 'core', test: (id) => atStart.has(id) }] },
  });
  await bundle.close();
}

// Every bundle's V8 code cache, made in a process of its own (see scripts/code-cache.cjs).
const bundles = readdirSync(out).filter((f) => f.endsWith('.cjs')).map((f) => path.join(out, f));
execFileSync(process.execPath, [path.join(root, 'scripts', 'code-cache.cjs'), ...bundles], { stdio: 'inherit' });
