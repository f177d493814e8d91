import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { NativeAddon } from './addon-types.js';
import { KvmError } from './kvm-error.js';

export type { NativeAddon } from './addon-types.js';

/** The project root: two levels above this file, in src/kvm/ (vitest) or dist/kvm/ (built). */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let loaded: NativeAddon | undefined;

/**
 * Loads the addon once per thread (each worker has its own instance) and registers KvmError as the
 * class it throws.
 */
export function addon(): NativeAddon {
  if (loaded === undefined) {
    const require = createRequire(import.meta.url);
    const file = path.join(packageRoot, 'build', 'Release', 'tsvmm.node');
    let native: NativeAddon;
    try {
      native = require(file) as NativeAddon;
    } catch (cause) {
      throw new Error(`cannot load the native addon ${file}: run \`npm install\` to build it`, { cause });
    }
    native.setErrorConstructor(KvmError);
    loaded = native;
  }
  return loaded;
}
