import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from './addon.js';

/** Where this module runs from: dist/bundle/ when tsvmm runs bundled (scripts/bundle.mjs). */
const bundleDir = path.dirname(fileURLToPath(import.meta.url));
const bundled = path.basename(bundleDir) === 'bundle';

/**
 * The file a worker thread runs. Bundled, every thread has its own one-file bundle beside the main
 * thread's (`bundleName`.cjs in dist/bundle/), so the thread reads one file instead of its module graph.
 * Otherwise (dist/ run directly, or vitest running src/) it is the compiled module `distModule` under
 * dist/: workers always run built JavaScript.
 */
export function threadScript(bundleName: string, distModule: string): string {
  return bundled ? path.join(bundleDir, `${bundleName}.cjs`) : path.join(packageRoot, 'dist', ...distModule.split('/'));
}
