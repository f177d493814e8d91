import { constants, fdatasyncSync, read as fsRead, write as fsWrite } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { addon } from '../../kvm/addon.js';
import { BLK_ID_BYTES } from './constants.js';

/** A disk option the user gave that cannot be used (missing, unreadable, not a regular file). */
export class DiskError extends Error {
  override name = 'DiskError';
}

/** Where a virtio-blk device's bytes live. Asynchronous: the main thread's event loop never blocks. */
export interface BlockBackend {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** The GET_ID answer (at most 20 bytes). */
  readonly id: string;
  /**
   * The open image's file descriptor, when the backend is a plain file: then the device may be served
   * by a thread of its own with synchronous I/O on it (see SyncFdBlockBackend).
   */
  readonly fd?: number;
  /** Reads exactly `buf.length` bytes at `offset`. */
  read(buf: Uint8Array, offset: number): Promise<void>;
  /** Writes all of `buf` at `offset`. */
  write(buf: Uint8Array, offset: number): Promise<void>;
  /** Puts every completed write on stable storage (fdatasync). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A backend whose I/O is done when the call returns (a dataplane thread's, where blocking is the
 * point). VirtioBlk serves such a backend's requests a batch at a time, straight between the image and
 * guest memory: no promise and no bounce buffer per request, and one interrupt per batch.
 */
export interface SyncBlockBackend extends BlockBackend {
  /** Fills `buf` from `offset` (exactly; a short image throws). */
  readSync(buf: Uint8Array, offset: number): void;
  /** Writes all of `buf` at `offset`. */
  writeSync(buf: Uint8Array, offset: number): void;
  /** fdatasync. */
  flushSync(): void;
}

/**
 * A raw image file: each request is one positioned read or write on libuv's threadpool, so requests
 * overlap and the event loop stays free.
 *
 * Reads and writes go through fs.read/fs.write with a callback on the raw fd, not FileHandle's
 * promise methods: per request those cost about 3x the CPU (measured on the build host, 4 KiB reads
 * at depth 8 from tmpfs: 52 us against 16 us), and in nested KVM that CPU was half of the main
 * thread's busy time in a 4 KiB diskcheck sweep (node --cpu-prof). The FileHandle still owns the fd
 * (open, stat, datasync, close).
 */
export class FileBlockBackend implements BlockBackend {
  private constructor(
    private readonly handle: FileHandle,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
    readonly id: string,
  ) {}

  /** Opens `file`; every problem is a DiskError naming the file and what to do. */
  static async open(file: string, readOnly: boolean): Promise<FileBlockBackend> {
    let handle: FileHandle;
    try {
      handle = await open(file, readOnly ? constants.O_RDONLY : constants.O_RDWR);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new DiskError(`--disk ${file}: the image file does not exist (create it, e.g. with truncate -s 64M ${file})`);
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new DiskError(`--disk ${file}: the image file is not ${readOnly ? 'readable' : 'writable'} (${code}); fix its permissions${readOnly ? '' : ' or add ,readonly'}`);
      }
      if (code === 'EISDIR') throw new DiskError(`--disk ${file}: is a directory, not a raw image file`);
      throw new DiskError(`--disk ${file}: cannot open the image: ${(e as Error).message}`);
    }
    try {
      const st = await handle.stat();
      if (!st.isFile() && !st.isBlockDevice()) throw new DiskError(`--disk ${file}: is not a regular file or block device`);
      if (st.size < 512) throw new DiskError(`--disk ${file}: the image is ${st.size} bytes; a disk needs at least one 512-byte sector`);
      const id = path.basename(file).slice(0, BLK_ID_BYTES);
      return new FileBlockBackend(handle, st.size, readOnly, id);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  get fd(): number {
    return this.handle.fd;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return transferAll(fsRead, this.handle.fd, buf, offset);
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    return transferAll(fsWrite, this.handle.fd, buf, offset);
  }

  flush(): Promise<void> {
    return this.handle.datasync();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

/**
 * Moves all of `buf` at `offset` with positioned fs.read or fs.write, continuing after short
 * transfers; a read that returns no bytes has hit the end of the image.
 */
function transferAll(io: typeof fsRead | typeof fsWrite, fd: number, buf: Uint8Array, offset: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done === buf.length) return resolve();
      (io as typeof fsRead)(fd, buf, done, buf.length - done, offset + done, (err, n) => {
        if (err !== null) reject(err);
        else if (n === 0 && io === fsRead) reject(new Error(`short read at ${offset + done}: the image ended`));
        else step(done + n);
      });
    };
    step(0);
  });
}

/**
 * An image another BlockBackend opened, through its fd, with synchronous positioned I/O: for a
 * device served by a thread of its own (the virtio-blk dataplane), where blocking that thread is the
 * point, as in QEMU's iothreads and Firecracker's default block engine: no threadpool hop and no
 * event-loop round trip per request. The promises it returns are already settled. It never closes the
 * fd: the backend that opened it does, after the serving thread has ended.
 */
export class SyncFdBlockBackend implements SyncBlockBackend {
  constructor(readonly fd: number, readonly sizeBytes: number, readonly readOnly: boolean, readonly id: string) {}

  // The addon's pread/pwrite, not fs.readSync/writeSync: the same system calls without node:fs's
  // argument checks and Buffer handling around each one.
  readSync(buf: Uint8Array, offset: number): void {
    const native = addon();
    for (let done = 0; done < buf.length;) {
      const n = native.pread(this.fd, done === 0 ? buf : buf.subarray(done), offset + done);
      if (n === 0) throw new Error(`short read at ${offset + done}: the image ended`);
      done += n;
    }
  }

  writeSync(buf: Uint8Array, offset: number): void {
    const native = addon();
    for (let done = 0; done < buf.length;) done += native.pwrite(this.fd, done === 0 ? buf : buf.subarray(done), offset + done);
  }

  flushSync(): void {
    fdatasyncSync(this.fd);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.readSync(buf, offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.writeSync(buf, offset);
  }

  async flush(): Promise<void> {
    this.flushSync();
  }

  async close(): Promise<void> {}
}
