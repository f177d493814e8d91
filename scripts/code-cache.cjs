#!/usr/bin/env node
// Writes a V8 code cache beside each bundle given (FILE.cjs -> FILE.cjs.cache), compiled with every
// function eager, for bin/bundle-loader.cjs. Run by scripts/bundle.mjs in a process of its own: V8
// accepts a cache only under the flags it was made with, which are bundle-loader's and nothing else.
//
// A cache file is the bundle's mtime and size (bin/bundle-loader.cjs, cacheHeader), then V8's data.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const v8 = require('node:v8');
const vm = require('node:vm');
const { setCacheFlags, cachePath, cacheHeader } = require('../bin/bundle-loader.cjs');

setCacheFlags();
for (const file of process.argv.slice(2)) {
  const content = readFileSync(file, 'utf8');
  // --no-lazy only while compiling: the cache then holds every function's bytecode, and the flags it
  // records (read when it is written) are the loader's.
  v8.setFlagsFromString('--no-lazy');
  const script = new vm.Script(Module.wrap(content), { filename: file });
  v8.setFlagsFromString('--lazy');
  writeFileSync(cachePath(file), Buffer.concat([cacheHeader(file), script.createCachedData()]));
}
