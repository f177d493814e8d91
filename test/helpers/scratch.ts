import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';

/**
 * Temporary directories for one test file, removed after each test: call in the file's top level to
 * get the function that makes one.
 */
export function scratchDirs(prefix: string): () => string {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = mkdtempSync(path.join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
}

/** Runs `f` with PATH emptied, so spawning any tool fails with ENOENT as on a host without it. */
export function withoutTools<T>(f: () => T): T {
  const saved = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    return f();
  } finally {
    process.env.PATH = saved;
  }
}
