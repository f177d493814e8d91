#!/usr/bin/env node
// The `tsvmm` command: runs the compiled CLI (`npm install` builds dist/). It runs bundled, one file
// per thread (dist/bundle/, see scripts/bundle.mjs), unless the bundle is missing or older than dist/
// (a `tsc` run since the last `npm run build`): then from dist/ directly, the same code, slower to load.
import { existsSync, statSync } from 'node:fs';

const dist = new URL('../dist/', import.meta.url);
const compiled = new URL('cli/main.js', dist);
const bundle = new URL('bundle/tsvmm.js', dist);
if (!existsSync(compiled)) {
  process.stderr.write('tsvmm: not built yet: run `npm install` in the tsvmm directory\n');
  process.exit(2);
}
const bundled = existsSync(bundle) && statSync(bundle).mtimeMs >= statSync(compiled).mtimeMs;
const argv = process.argv.slice(2);
// `run` always needs a vCPU thread: start the first now, so its start-up overlaps loading the CLI and
// building the VM (see src/vcpu/prestarted-thread.ts).
let prestartedVcpuThread;
if (argv[0] === 'run') {
  const { PrestartedThread } = await import(new URL('vcpu/prestarted-thread.js', dist).href);
  prestartedVcpuThread = PrestartedThread.start(new URL(bundled ? 'bundle/vcpu-thread.js' : 'vcpu/vcpu-thread.js', dist));
}
const { main } = await import((bundled ? bundle : compiled).href);
process.exit(await main(argv, { prestartedVcpuThread }));
