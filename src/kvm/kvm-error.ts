import { constants } from 'node:os';

const errnoNames: ReadonlyMap<number, string> = new Map(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** The symbolic name of a positive errno ('EINVAL'), or 'E<number>' for one libc does not name. */
export function errnoCode(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/**
 * A failed system call made by the native addon. The C++ side constructs it as
 * `new KvmError(syscall, errno)`; the message is derived from those two fields, never retyped, so it
 * cannot name a different call than the one that failed.
 */
export class KvmError extends Error {
  readonly errno: number;
  /** Node-style symbolic code: 'EINVAL', 'EBADF'. */
  readonly code: string;
  /** The ioctl or libc function: 'KVM_SET_USER_MEMORY_REGION', 'mmap'. */
  readonly syscall: string;

  constructor(syscall: string, errno: number) {
    const code = errnoCode(errno);
    super(`${syscall} failed: ${code} (${errno})`);
    this.name = 'KvmError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}
