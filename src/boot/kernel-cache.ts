import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync, type BigIntStats } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Unpacked kernels on disk, keyed by the content of the compressed payload they came from, so a kernel
 * is unpacked once, not on every boot (xz needs about a second natively for Debian's 66 MB vmlinux).
 *
 * The cache is an optimisation and never an error: a directory that cannot be made or written (a
 * read-only home, a full disk) just means the next boot unpacks again. A file is published by rename,
 * so a reader sees a whole vmlinux or none, and a reader also checks the length the bzImage declares.
 * The least recently used files beyond `keep` are removed after each store (about 66 MB each).
 */
/** What identifies a file's content without reading it: device, inode, size, mtime and ctime (ns); undefined if it cannot be stat'd. */
export function fileStamp(file: string): string | undefined {
  try {
    return stampOf(statSync(file, { bigint: true }));
  } catch {
    return undefined;
  }
}

/** fileStamp from a file's stat (of an open file: fstatSync(fd, { bigint: true })). */
export function stampOf(st: BigIntStats): string {
  return `${st.dev}-${st.ino}-${st.size}-${st.mtimeNs}-${st.ctimeNs}`;
}

export class KernelCache {
  constructor(readonly dir: string, private readonly keep = 4) {}

  /** $TSVMM_CACHE_DIR, else $XDG_CACHE_HOME/tsvmm/kernels, else ~/.cache/tsvmm/kernels. */
  static defaultDir(env: NodeJS.ProcessEnv = process.env): string {
    if (env.TSVMM_CACHE_DIR) return path.join(env.TSVMM_CACHE_DIR, 'kernels');
    const base = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache');
    return path.join(base, 'tsvmm', 'kernels');
  }

  /** The key of a payload: BLAKE2b (the fastest of node:crypto's secure hashes here), hex, 256 bits. */
  static key(payload: Uint8Array): string {
    // node:crypto on first use: a multiboot guest's start does not load it (test/unit/cli/bundle.test.ts).
    return process.getBuiltinModule('node:crypto').createHash('blake2b512').update(payload).digest('hex').slice(0, 64);
  }

  /**
   * The key of `payload`, read from a file whose `stamp` (fileStamp: device, inode, size, mtime and
   * ctime in ns) did not change while it was read: taken from this cache's memo of that stamp when it
   * has one, else hashed and memoised. A file that changes gets a new ctime, so a stamp names one
   * content, as git's index and ccache's direct mode rely on; the memo saves hashing and loading
   * node:crypto on every boot (about 0.35 s of a 2.5 s boot in nested KVM, 10 ms natively).
   */
  keyOf(payload: Uint8Array, stamp: string | undefined): string {
    const known = stamp === undefined ? undefined : this.knownKey(stamp);
    if (known !== undefined) return known;
    const key = KernelCache.key(payload);
    if (stamp !== undefined) this.publish(this.memo(stamp), key);
    return key;
  }

  /** The key memoised for a file of this stamp (see keyOf), if it was seen. */
  knownKey(stamp: string): string | undefined {
    try {
      const key = readFileSync(this.memo(stamp), 'latin1');
      return /^[0-9a-f]{64}$/.test(key) ? key : undefined;
    } catch {
      return undefined;
    }
  }

  private memo(stamp: string): string {
    return path.join(this.dir, `seen-${stamp}`);
  }

  private file(key: string): string {
    return path.join(this.dir, `vmlinux-${key}`);
  }

  /** The path of the cached vmlinux for `key` if there is one of exactly `size` bytes (marked as just used). */
  lookup(key: string, size: number): string | undefined {
    const file = this.file(key);
    try {
      if (statSync(file).size !== size) return undefined;
      const now = new Date();
      utimesSync(file, now, now);
      return file;
    } catch {
      return undefined;
    }
  }

  /** Stores `bytes` under `key`; false (and nothing half-written left behind) if the disk refuses. */
  store(key: string, bytes: Uint8Array): boolean {
    if (!this.publish(this.file(key), bytes)) return false;
    this.prune();
    return true;
  }

  /**
   * Writes `file` whole or not at all (a temporary file, then rename, so a reader never sees part of
   * it); false, with the temporary file gone, if the disk refuses.
   */
  private publish(file: string, data: Uint8Array | string): boolean {
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      mkdirSync(this.dir, { recursive: true });
      writeFileSync(tmp, data);
      renameSync(tmp, file);
      return true;
    } catch {
      try {
        rmSync(tmp, { force: true });
      } catch {
        // Nothing was written where nothing could be made.
      }
      return false;
    }
  }

  /** Keeps the `keep` most recently used kernels and four times as many memos (a few bytes each). */
  private prune(): void {
    try {
      const names = readdirSync(this.dir).filter((f) => !f.endsWith('.tmp'));
      const newestFirst = (prefix: string) => names.filter((f) => f.startsWith(prefix))
        .map((f) => ({ f, mtime: statSync(path.join(this.dir, f)).mtimeMs }))
        .sort((a, b) => b.mtime - a.mtime);
      for (const { f } of newestFirst('vmlinux-').slice(this.keep)) rmSync(path.join(this.dir, f), { force: true });
      for (const { f } of newestFirst('seen-').slice(4 * this.keep)) rmSync(path.join(this.dir, f), { force: true });
    } catch {
      // A file another tsvmm removed meanwhile, or a directory gone: pruning is best effort.
    }
  }
}
