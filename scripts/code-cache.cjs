#!/usr/bin/env node
// Writes a V8 code cache beside each bundle given (FILE.cjs -> FILE.cjs.cache), compiled with every
// function eager, for bin/bundle-loader.cjs. Run by scripts/bundle.mjs in a process of its own: V8
// accepts a cache only under the flags it was made with, Node's defaults, which --no-lazy (set here
// only while compiling) must not be left to change.
//
// A cache file is the bundle's mtime and size (bin/bundle-loader.cjs, cacheHeader), then V8's data.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const v8 = require('node:v8');
const vm = require('node:vm');
const { cachePath, cacheHeader } = require('../bin/bundle-loader.cjs');

for (const file of process.argv.slice(2)) {
  const content = readFileSync(file, 'utf8');
  // --no-lazy only while compiling: the cache then holds every function's bytecode, and the flags it
  // records (read when it is written) are the defaults again.
  v8.setFlagsFromString('--no-lazy');
  const script = new vm.Script(Module.wrap(content), { filename: file });
  v8.setFlagsFromString('--lazy');
  writeFileSync(cachePath(file), Buffer.concat([cacheHeader(file), script.createCachedData()]));
}
