#!/usr/bin/env node
// The `tsvmm` command: runs the compiled CLI (`npm install` builds dist/). It runs bundled, one file
// per thread (dist/bundle/, see scripts/bundle.mjs), unless the bundle is missing or older than dist/
// (a `tsc` run since the last `npm run build`): then from dist/ directly, the same code, slower to load.
//
// CommonJS, as the bundles are: bundled, Node's ES module loader is never started (see scripts/bundle.mjs).
'use strict';
const { existsSync, statSync } = require('node:fs');
const path = require('node:path');

const dist = path.join(__dirname, '..', 'dist');
const compiled = path.join(dist, 'cli', 'main.js');
const bundleDir = path.join(dist, 'bundle');
const bundle = path.join(bundleDir, 'tsvmm.cjs');
if (!existsSync(compiled)) {
  process.stderr.write('tsvmm: not built yet: run `npm install` in the tsvmm directory\n');
  process.exit(2);
}
const bundled = existsSync(bundle) && statSync(bundle).mtimeMs >= statSync(compiled).mtimeMs;
// Bundles compile from their code caches, every function already compiled (see bundle-loader.cjs).
if (bundled) require('./bundle-loader.cjs').installBundleLoader(bundleDir);
const argv = process.argv.slice(2);

/** A module of dist/: the bundle's CommonJS file, or the compiled ES module. */
async function load(bundleName, distModule) {
  if (bundled) return require(path.join(bundleDir, `${bundleName}.cjs`));
  return import(require('node:url').pathToFileURL(path.join(dist, distModule)).href);
}

(async () => {
  // `run` always needs a vCPU thread: start the first now, so its start-up overlaps loading the CLI
  // and building the VM (see src/vcpu/prestarted-thread.ts).
  let prestartedVcpuThread;
  if (argv[0] === 'run') {
    const { PrestartedThread } = await load('prestarted-thread', 'vcpu/prestarted-thread.js');
    prestartedVcpuThread = PrestartedThread.start(bundled ? path.join(bundleDir, 'vcpu-thread.cjs') : path.join(dist, 'vcpu', 'vcpu-thread.js'));
  }
  const { main } = await load('tsvmm', 'cli/main.js');
  process.exit(await main(argv, { prestartedVcpuThread }));
})();
