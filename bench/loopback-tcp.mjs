// The loopback TCP limit as bench/loopback-tcp.c measures it (a C pair, no runtime in the way): the
// baseline bench/migrate and bench/ram-transfer put their rates against.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const source = path.join(path.dirname(fileURLToPath(import.meta.url)), 'loopback-tcp.c');

/**
 * Bytes/s through 127.0.0.1 for `seconds`, from bench/loopback-tcp.c built with gcc into `workDir`
 * (once), or undefined without gcc.
 */
export function cLoopback(workDir, seconds) {
  const exe = path.join(workDir, 'loopback-tcp');
  if (!existsSync(exe)) {
    const cc = spawnSync('gcc', ['-O2', '-o', exe, source], { encoding: 'utf8' });
    if (cc.error !== undefined || cc.status !== 0) return undefined;
  }
  const r = spawnSync(exe, [String(seconds)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/loopback-tcp failed: ${r.stderr.trim()}`);
  return Number(r.stdout);
}
