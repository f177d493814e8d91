// Loads the bundles in dist/bundle/ through the V8 code caches that scripts/code-cache.cjs writes
// beside them at build time, every function of each already compiled.
//
// Why: V8 compiles a function the first time it is called. A migration's switch-over runs code that
// runs once per migration (pausing, capturing and encoding state, the end of the stream), so each of
// its functions was compiled inside the guest's downtime: one idle 1 GiB switch-over took 4-5 ms from
// pause to LOADED, and 2-3 ms with every function compiled ahead (node --no-lazy, kvm_pvm). Compiling
// everything at start (--no-lazy) would cost every launch ~35 ms; a cache made eagerly at build time
// costs a launch no more than compiling the source lazily does (~2-5 ms for the main bundle either way).
//
// The cache is a hint, never a source of truth: one that does not record the bundle's present size
// and modification time (scripts/bundle.mjs writes both together) is not offered to V8, and one V8
// rejects (another Node) leaves V8 compiling the source as without a cache. Either way
// the code that runs is the bundle's. (V8 itself checks only the source's length.)
'use strict';
const { readFileSync, statSync } = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

/*
 * No V8 flag is changed here, though --no-flush-bytecode would keep the eagerly compiled bytecode of
 * functions that have not run for a few garbage collections (V8 drops it, and compiles again on the
 * next call): V8 checks a hash of its flags against every code cache, Node's own included, so after
 * any flag change Node compiled its internal modules from source, and each worker thread started
 * 25-35 ms later (the vCPU thread of a launch among them). A VM that runs for hours before it migrates
 * may so compile parts of its switch-over again; PrecopySender's rehearsal re-runs the largest part.
 */

/** Bytes of the header that opens each cache file: the bundle's mtimeMs and size, float64 LE each. */
const HEADER_BYTES = 16;

/** The cache file of bundle `file`. */
function cachePath(file) {
  return `${file}.cache`;
}

/** The header naming `file` as it is now. */
function cacheHeader(file) {
  const { mtimeMs, size } = statSync(file);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeDoubleLE(mtimeMs, 0);
  header.writeDoubleLE(size, 8);
  return header;
}

/** The V8 data of `file`'s cache if it was made from `file` as it is now, else undefined. */
function cachedData(file) {
  let bytes;
  try {
    bytes = readFileSync(cachePath(file));
  } catch {
    return undefined; // not built with caches: compile as usual
  }
  if (bytes.length <= HEADER_BYTES || !bytes.subarray(0, HEADER_BYTES).equals(cacheHeader(file))) return undefined;
  return bytes.subarray(HEADER_BYTES);
}

/** The `require` a CommonJS module body receives, as Node makes it. */
function requireFor(mod) {
  const require = (id) => mod.require(id);
  require.resolve = (request, options) => Module._resolveFilename(request, mod, false, options);
  require.main = process.mainModule;
  require.cache = Module._cache;
  require.extensions = Module._extensions;
  return require;
}

/**
 * From now on, CommonJS files in `bundleDir` compile with their code cache. Returns the files whose
 * cache V8 rejected so far (for tests and `TSVMM_TRACE_PHASES`), filled in as bundles load.
 */
function installBundleLoader(bundleDir) {
  const rejected = [];
  const compile = Module.prototype._compile;
  Module.prototype._compile = function compileWithCache(content, filename) {
    if (path.dirname(filename) !== bundleDir) return compile.call(this, content, filename);
    const data = cachedData(filename);
    if (data === undefined) return compile.call(this, content, filename);
    const script = new vm.Script(Module.wrap(content), { filename, cachedData: data });
    if (script.cachedDataRejected) rejected.push(filename);
    const body = script.runInThisContext({ displayErrors: true });
    return body.call(this.exports, this.exports, requireFor(this), this, filename, path.dirname(filename));
  };
  return rejected;
}

module.exports = { installBundleLoader, cachePath, cacheHeader };
