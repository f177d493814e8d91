#!/usr/bin/env node
// Builds build/Release/tsvmm.node (run by `npm install`).
//
// Uses the node-gyp from node_modules and this Node's own headers (--nodedir): node-gyp would
// otherwise download a header tarball, and the only network available is the npm registry.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function fail(message) {
  console.error(`tsvmm: native addon not built: ${message}`);
  process.exit(1);
}

if (!existsSync('/usr/include/linux/kvm.h')) {
  fail('/usr/include/linux/kvm.h is missing (install linux-libc-dev)');
}

const nodeGyp = path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
if (!existsSync(nodeGyp)) fail(`${nodeGyp} is missing (run npm install with dev dependencies)`);

// /usr/bin/node -> /usr; official tarballs and distro -dev packages both put headers in <prefix>/include/node.
const prefix = path.resolve(path.dirname(process.execPath), '..');
if (!existsSync(path.join(prefix, 'include', 'node', 'node.h'))) {
  fail(`no Node.js headers at ${path.join(prefix, 'include', 'node')} (install the headers for ${process.version}, e.g. libnode-dev)`);
}

const result = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${prefix}`, '--jobs=max'], {
  cwd: root,
  stdio: 'inherit',
});
if (result.error) fail(`cannot run node-gyp: ${result.error.message}`);
if (result.status !== 0) fail(`node-gyp rebuild exited with ${result.status ?? result.signal} (compiler output above)`);
if (!existsSync(path.join(root, 'build', 'Release', 'tsvmm.node'))) fail('node-gyp succeeded but build/Release/tsvmm.node is missing');
