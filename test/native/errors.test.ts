// The native addon's error paths, argument checks and the calls that need no /dev/kvm.
//
// Every wrapper is reached with arguments that pass the addon's own checks, so what is asserted is
// what the kernel said and which syscall name the addon attached to it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { addon, packageRoot, type NativeAddon } from '../../src/kvm/addon.js';
import { KvmError } from '../../src/kvm/kvm-error.js';
import { kvmRun } from '../../src/kvm/kvm-run.js';
import { EFD_NONBLOCK } from '../../src/kvm/constants.js';

const native = addon();

const EBADF = 9;
const ENOENT = 2;
const ESRCH = 3;
const EINVAL = 22;
const ENODEV = 19;
const ENOTTY = 25;
const EEXIST = 17;
const ESPIPE = 29;
const EAGAIN = 11;
const EAFNOSUPPORT = 97;
const ENOPROTOOPT = 92;
const PAGE = 4096;
/** Above any fd the kernel can hand out (NR_OPEN is 2^20), so it is never open. */
const NEVER_OPEN_FD = 2 ** 31 - 1;
const KVM_RUN_SIZE = 2352;

/** Runs `call` and returns what it threw, failing the test if it returned. */
function thrown(call: () => unknown): unknown {
  try {
    call();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to throw');
}

function expectKvmError(call: () => unknown, syscall: string, errno: number): void {
  const error = thrown(call);
  expect(error).toBeInstanceOf(KvmError);
  expect(error).toMatchObject({ syscall, errno });
  expect((error as KvmError).message).toBe(`${syscall} failed: ${(error as KvmError).code} (${errno})`);
}

/** A struct with a u32 count header (kvm_cpuid2, kvm_msrs, kvm_msr_list) announcing `count` entries. */
function counted(header: number, entry: number, count: number, extraBytes = 0): Uint8Array {
  const buf = new Uint8Array(header + count * entry + extraBytes);
  new DataView(buf.buffer).setUint32(0, count, true);
  return buf;
}

interface FdCall {
  syscall: string;
  call: (fd: number) => unknown;
}

/** struct sockaddr_in for 127.0.0.1, port 0. */
const LOOPBACK_ANY_PORT = new Uint8Array([2, 0, 0, 0, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);

/** Every wrapper whose first argument is a file descriptor, with otherwise valid arguments. */
const fdCalls = {
  close: { syscall: 'close', call: (fd) => native.close(fd) },
  dup: { syscall: 'dup', call: (fd) => native.dup(fd) },
  ftruncate: { syscall: 'ftruncate', call: (fd) => native.ftruncate(fd, 0n) },
  mmapShared: { syscall: 'mmap', call: (fd) => native.mmapShared(fd, PAGE, 0) },
  read: { syscall: 'read', call: (fd) => native.read(fd, new Uint8Array(8)) },
  write: { syscall: 'write', call: (fd) => native.write(fd, new Uint8Array(8)) },
  tunSetIff: { syscall: 'TUNSETIFF', call: (fd) => native.tunSetIff(fd, 'tsvmm0', 0x1002) },

  kvmGetApiVersion: { syscall: 'KVM_GET_API_VERSION', call: (fd) => native.kvmGetApiVersion(fd) },
  kvmCheckExtension: { syscall: 'KVM_CHECK_EXTENSION', call: (fd) => native.kvmCheckExtension(fd, 1) },
  kvmGetVcpuMmapSize: { syscall: 'KVM_GET_VCPU_MMAP_SIZE', call: (fd) => native.kvmGetVcpuMmapSize(fd) },
  kvmGetSupportedCpuid: {
    syscall: 'KVM_GET_SUPPORTED_CPUID',
    call: (fd) => native.kvmGetSupportedCpuid(fd, counted(8, 40, 2)),
  },
  kvmGetMsrIndexList: {
    syscall: 'KVM_GET_MSR_INDEX_LIST',
    call: (fd) => native.kvmGetMsrIndexList(fd, counted(4, 4, 2)),
  },
  kvmCreateVm: { syscall: 'KVM_CREATE_VM', call: (fd) => native.kvmCreateVm(fd, 0) },

  kvmSetUserMemoryRegion: {
    syscall: 'KVM_SET_USER_MEMORY_REGION',
    call: (fd) => native.kvmSetUserMemoryRegion(fd, 0, 0, 0n, BigInt(PAGE), 0x10000n),
  },
  kvmGetDirtyLog: { syscall: 'KVM_GET_DIRTY_LOG', call: (fd) => native.kvmGetDirtyLog(fd, 0, new Uint8Array(8)) },
  kvmClearDirtyLog: {
    syscall: 'KVM_CLEAR_DIRTY_LOG',
    call: (fd) => native.kvmClearDirtyLog(fd, 0, 0, 64, new Uint8Array(8)),
  },
  kvmEnableCap: { syscall: 'KVM_ENABLE_CAP', call: (fd) => native.kvmEnableCap(fd, 0, 0, new BigUint64Array(4)) },
  kvmCreateIrqchip: { syscall: 'KVM_CREATE_IRQCHIP', call: (fd) => native.kvmCreateIrqchip(fd) },
  kvmCreatePit2: { syscall: 'KVM_CREATE_PIT2', call: (fd) => native.kvmCreatePit2(fd, 0) },
  kvmIrqLine: { syscall: 'KVM_IRQ_LINE', call: (fd) => native.kvmIrqLine(fd, 4, 1) },
  kvmSetTssAddr: { syscall: 'KVM_SET_TSS_ADDR', call: (fd) => native.kvmSetTssAddr(fd, 0xfffbd000) },
  kvmSetIdentityMapAddr: {
    syscall: 'KVM_SET_IDENTITY_MAP_ADDR',
    call: (fd) => native.kvmSetIdentityMapAddr(fd, 0xfffbc000n),
  },
  kvmIrqfd: { syscall: 'KVM_IRQFD', call: (fd) => native.kvmIrqfd(fd, 0, 4, 0, 0) },
  kvmIoeventfd: { syscall: 'KVM_IOEVENTFD', call: (fd) => native.kvmIoeventfd(fd, 0x3f8n, 1, 0, 0, 0n) },
  kvmGetClock: { syscall: 'KVM_GET_CLOCK', call: (fd) => native.kvmGetClock(fd, new Uint8Array(48)) },
  kvmSetClock: { syscall: 'KVM_SET_CLOCK', call: (fd) => native.kvmSetClock(fd, new Uint8Array(48)) },
  kvmGetIrqchip: { syscall: 'KVM_GET_IRQCHIP', call: (fd) => native.kvmGetIrqchip(fd, new Uint8Array(520)) },
  kvmSetIrqchip: { syscall: 'KVM_SET_IRQCHIP', call: (fd) => native.kvmSetIrqchip(fd, new Uint8Array(520)) },
  kvmGetPit2: { syscall: 'KVM_GET_PIT2', call: (fd) => native.kvmGetPit2(fd, new Uint8Array(112)) },
  kvmSetPit2: { syscall: 'KVM_SET_PIT2', call: (fd) => native.kvmSetPit2(fd, new Uint8Array(112)) },
  kvmCreateVcpu: { syscall: 'KVM_CREATE_VCPU', call: (fd) => native.kvmCreateVcpu(fd, 0) },

  // The addon returns KVM_RUN's errno (a fast API call cannot throw); kvmRun() makes it the KvmError.
  kvmRun: { syscall: 'KVM_RUN', call: (fd) => kvmRun(native, fd) },
  kvmGetRegs: { syscall: 'KVM_GET_REGS', call: (fd) => native.kvmGetRegs(fd, new Uint8Array(144)) },
  kvmSetRegs: { syscall: 'KVM_SET_REGS', call: (fd) => native.kvmSetRegs(fd, new Uint8Array(144)) },
  kvmGetSregs: { syscall: 'KVM_GET_SREGS', call: (fd) => native.kvmGetSregs(fd, new Uint8Array(312)) },
  kvmSetSregs: { syscall: 'KVM_SET_SREGS', call: (fd) => native.kvmSetSregs(fd, new Uint8Array(312)) },
  kvmGetFpu: { syscall: 'KVM_GET_FPU', call: (fd) => native.kvmGetFpu(fd, new Uint8Array(416)) },
  kvmSetFpu: { syscall: 'KVM_SET_FPU', call: (fd) => native.kvmSetFpu(fd, new Uint8Array(416)) },
  kvmGetMsrs: { syscall: 'KVM_GET_MSRS', call: (fd) => native.kvmGetMsrs(fd, counted(8, 16, 2)) },
  kvmSetMsrs: { syscall: 'KVM_SET_MSRS', call: (fd) => native.kvmSetMsrs(fd, counted(8, 16, 2)) },
  kvmGetLapic: { syscall: 'KVM_GET_LAPIC', call: (fd) => native.kvmGetLapic(fd, new Uint8Array(1024)) },
  kvmSetLapic: { syscall: 'KVM_SET_LAPIC', call: (fd) => native.kvmSetLapic(fd, new Uint8Array(1024)) },
  kvmGetXsave: { syscall: 'KVM_GET_XSAVE', call: (fd) => native.kvmGetXsave(fd, new Uint8Array(4096)) },
  kvmSetXsave: { syscall: 'KVM_SET_XSAVE', call: (fd) => native.kvmSetXsave(fd, new Uint8Array(4096)) },
  kvmGetXcrs: { syscall: 'KVM_GET_XCRS', call: (fd) => native.kvmGetXcrs(fd, new Uint8Array(392)) },
  kvmSetXcrs: { syscall: 'KVM_SET_XCRS', call: (fd) => native.kvmSetXcrs(fd, new Uint8Array(392)) },
  kvmGetVcpuEvents: { syscall: 'KVM_GET_VCPU_EVENTS', call: (fd) => native.kvmGetVcpuEvents(fd, new Uint8Array(64)) },
  kvmSetVcpuEvents: { syscall: 'KVM_SET_VCPU_EVENTS', call: (fd) => native.kvmSetVcpuEvents(fd, new Uint8Array(64)) },
  kvmGetMpState: { syscall: 'KVM_GET_MP_STATE', call: (fd) => native.kvmGetMpState(fd, new Uint8Array(4)) },
  kvmSetMpState: { syscall: 'KVM_SET_MP_STATE', call: (fd) => native.kvmSetMpState(fd, new Uint8Array(4)) },
  kvmGetDebugregs: { syscall: 'KVM_GET_DEBUGREGS', call: (fd) => native.kvmGetDebugregs(fd, new Uint8Array(128)) },
  kvmSetDebugregs: { syscall: 'KVM_SET_DEBUGREGS', call: (fd) => native.kvmSetDebugregs(fd, new Uint8Array(128)) },
  kvmSetCpuid2: { syscall: 'KVM_SET_CPUID2', call: (fd) => native.kvmSetCpuid2(fd, counted(8, 40, 2)) },
  // libuv checks the fd first (it makes it non-blocking, and asks epoll whether it can be polled).
  fdWatch: { syscall: 'uv_poll_init', call: (fd) => native.fdWatch(fd, () => {}) },
  bind: { syscall: 'bind', call: (fd) => native.bind(fd, LOOPBACK_ANY_PORT) },
  pread: { syscall: 'pread', call: (fd) => native.pread(fd, new Uint8Array(8), 0) },
  pwrite: { syscall: 'pwrite', call: (fd) => native.pwrite(fd, new Uint8Array(8), 0) },
  sendto: { syscall: 'sendto', call: (fd) => native.sendto(fd, new Uint8Array(1), LOOPBACK_ANY_PORT) },
  setsockoptInt: { syscall: 'setsockopt', call: (fd) => native.setsockoptInt(fd, 1 /* SOL_SOCKET */, 8 /* SO_RCVBUF */, 65536) },

  benchSyncDirtyLogs: {
    syscall: 'KVM_GET_DIRTY_LOG',
    call: (fd) => native.benchSyncDirtyLogs(fd, new Uint8Array(new Uint32Array([0, 64, 0]).buffer), new Uint8Array(8), 1),
  },
  benchCountPioExits: {
    syscall: 'KVM_RUN',
    call: (fd) => native.benchCountPioExits(fd, new ArrayBuffer(KVM_RUN_SIZE), 0x3f8, 0),
  },
} satisfies Partial<Record<keyof NativeAddon, FdCall>>;

/** The wrappers that take no fd first; each has its own tests below. */
const otherFunctions = [
  'setErrorConstructor', 'open', 'eventfd', 'memfdCreate', 'mmapAnonymous', 'mmapPrivate', 'mappingView', 'munmap', 'bufferAddress', 'madvise',
  'gettid', 'tgkill', 'schedYield', 'sigrtmin', 'installEmptySignalHandler', 'poll', 'fdUnwatch', 'socket', 'bitmapOrLog', 'bitmapPages', 'bitmapTake', 'bitmapTakeOr', 'bitmapCount', 'packPages', 'pagemapToggles', 'clearPages', 'xxh3Update', 'xxh3Digest',
] as const;

// Fails to type-check if NativeAddon gains a function that neither list covers.
type Covered = keyof typeof fdCalls | (typeof otherFunctions)[number];
const coveredAtCompileTime: Record<keyof NativeAddon, true> = {} as Record<Covered, true>;
void coveredAtCompileTime;

const fdEntries = Object.entries(fdCalls) as [string, FdCall][];
const kvmEntries = fdEntries.filter(([, spec]) => spec.syscall.startsWith('KVM_'));

/** Fixed-size structs: [wrapper, sizeof]. */
const fixedStructs: [string, number][] = [
  ['kvmGetRegs', 144], ['kvmSetRegs', 144], ['kvmGetSregs', 312], ['kvmSetSregs', 312],
  ['kvmGetFpu', 416], ['kvmSetFpu', 416], ['kvmGetLapic', 1024], ['kvmSetLapic', 1024],
  ['kvmGetXsave', 4096], ['kvmSetXsave', 4096], ['kvmGetXcrs', 392], ['kvmSetXcrs', 392],
  ['kvmGetVcpuEvents', 64], ['kvmSetVcpuEvents', 64], ['kvmGetMpState', 4], ['kvmSetMpState', 4],
  ['kvmGetDebugregs', 128], ['kvmSetDebugregs', 128], ['kvmGetClock', 48], ['kvmSetClock', 48],
  ['kvmGetIrqchip', 520], ['kvmSetIrqchip', 520], ['kvmGetPit2', 112], ['kvmSetPit2', 112],
];

/** Counted structs: [wrapper, header bytes, entry bytes]. */
const countedStructs: [string, number, number][] = [
  ['kvmGetSupportedCpuid', 8, 40], ['kvmSetCpuid2', 8, 40], ['kvmGetMsrIndexList', 4, 4],
  ['kvmGetMsrs', 8, 16], ['kvmSetMsrs', 8, 16],
];

type BufferCall = (fd: number, buf: Uint8Array) => unknown;
const bufferCall = (name: string): BufferCall => (native as unknown as Record<string, BufferCall>)[name]!;

describe('the addon surface', () => {
  it('exports exactly the functions these tests cover, all as functions', () => {
    expect(Object.keys(native).sort()).toEqual([...Object.keys(fdCalls), ...otherFunctions].sort());
    for (const value of Object.values(native)) expect(typeof value).toBe('function');
  });

  it('lists every wrapper taking a struct buffer in the size tables below', () => {
    // Probe them all: only a wrapper with a `buf` struct argument rejects an empty one as too short
    // (kvmRun returns its errno rather than throwing).
    const takesBuf = fdEntries
      .map(([name]) => name)
      .filter((name) => {
        let error: unknown;
        try {
          bufferCall(name)(-1, new Uint8Array(0));
        } catch (e) {
          error = e;
        }
        return error instanceof RangeError && error.message.startsWith(`${name}: argument buf `);
      });
    expect(takesBuf.sort()).toEqual([...fixedStructs, ...countedStructs].map(([name]) => name).sort());
  });
});

describe('bad file descriptors', () => {
  it.each(fdEntries)('%s(-1) throws EBADF', (_name, { syscall, call }) => {
    expectKvmError(() => call(-1), syscall, EBADF);
    const error = thrown(() => call(-1)) as KvmError;
    expect(error.code).toBe('EBADF');
    expect(error.name).toBe('KvmError');
  });

  it.each(fdEntries)('%s(never-open fd) throws EBADF', (_name, { syscall, call }) => {
    expectKvmError(() => call(NEVER_OPEN_FD), syscall, EBADF);
  });

  it('close of an fd that was just closed throws EBADF', () => {
    const fd = native.eventfd(0, 0);
    native.close(fd);
    expectKvmError(() => native.close(fd), 'close', EBADF);
  });

  it.each(kvmEntries)('%s on an eventfd throws ENOTTY', (_name, { syscall, call }) => {
    const fd = native.eventfd(0, 0);
    try {
      expectKvmError(() => call(fd), syscall, ENOTTY);
    } finally {
      native.close(fd);
    }
  });

  it.each(kvmEntries)('%s on a memfd throws ENOTTY', (_name, { syscall, call }) => {
    const fd = native.memfdCreate('tsvmm-enotty');
    try {
      expectKvmError(() => call(fd), syscall, ENOTTY);
    } finally {
      native.close(fd);
    }
  });

  it('ftruncate and mmapShared on an eventfd report the kernel error under their own names', () => {
    const fd = native.eventfd(0, 0);
    try {
      expectKvmError(() => native.ftruncate(fd, 4096n), 'ftruncate', EINVAL);
      expectKvmError(() => native.mmapShared(fd, PAGE, 0), 'mmap', ENODEV);
    } finally {
      native.close(fd);
    }
  });
});

describe('kvmRun, a V8 fast API call', () => {
  it('returns the errno instead of throwing, from unoptimized and from optimized code alike', () => {
    expect(native.kvmRun(-1)).toBe(EBADF);
    // Optimized code calls the C function directly (native/fast-call.h); it must answer the same.
    setFlagsFromString('--allow-natives-syntax');
    const optimized = new Function('native', 'fd', `
      const run = (f) => native.kvmRun(f);
      %PrepareFunctionForOptimization(run);
      run(fd); run(fd);
      %OptimizeFunctionOnNextCall(run);
      const result = run(fd);
      return [result, %GetOptimizationStatus(run)];
    `) as (n: NativeAddon, fd: number) => [number, number];
    const [result, status] = optimized(native, NEVER_OPEN_FD);
    expect(result).toBe(EBADF);
    expect(status & 16).toBe(16); // V8's OptimizationStatus::kTurboFanned: `run` did get optimized
  });
});

describe('libc failures', () => {
  it('open of a missing path throws ENOENT', () => {
    expectKvmError(() => native.open('/nonexistent'), 'open', ENOENT);
    expect((thrown(() => native.open('/nonexistent')) as KvmError).code).toBe('ENOENT');
  });

  it('open of an existing path returns an fd', () => {
    const fd = native.open('/dev/null');
    expect(fd).toBeGreaterThanOrEqual(0);
    native.close(fd);
  });

  it('eventfd with unknown flags throws EINVAL', () => {
    expectKvmError(() => native.eventfd(0, 0xffff_ffff), 'eventfd', EINVAL);
  });

  it('memfd_create with an over-long name throws EINVAL', () => {
    expectKvmError(() => native.memfdCreate('x'.repeat(300)), 'memfd_create', EINVAL);
  });

  it('mmapAnonymous of zero bytes throws EINVAL', () => {
    expectKvmError(() => native.mmapAnonymous(0), 'mmap', EINVAL);
  });

  it('tgkill of a bad signal or a thread that does not exist fails', () => {
    expectKvmError(() => native.tgkill(native.gettid(), 1000), 'tgkill', EINVAL);
    expectKvmError(() => native.tgkill(2 ** 31 - 1, 0), 'tgkill', ESRCH);
  });

  it('installEmptySignalHandler(SIGKILL) throws EINVAL', () => {
    expectKvmError(() => native.installEmptySignalHandler(9), 'sigaction', EINVAL);
  });
});

describe('argument checks', () => {
  it.each(fixedStructs)('%s rejects a buffer one byte short of %i', (name, size) => {
    const call = bufferCall(name);
    const error = thrown(() => call(-1, new Uint8Array(size - 1)));
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toBe(
      `${name}: argument buf must be at least ${size} bytes, got ${size - 1}`,
    );
    // Exactly the struct size gets through to the kernel.
    expect(thrown(() => call(-1, new Uint8Array(size)))).toBeInstanceOf(KvmError);
  });

  it.each(countedStructs)('%s checks its header (%i bytes) and the entries it announces (%i bytes each)',
    (name, header, entry) => {
      const call = bufferCall(name);
      const short = thrown(() => call(-1, new Uint8Array(header - 1)));
      expect(short).toBeInstanceOf(RangeError);
      expect((short as Error).message).toMatch(new RegExp(`^${name}: argument buf `));

      const missingEntry = thrown(() => call(-1, counted(header, entry, 3, -1)));
      expect(missingEntry).toBeInstanceOf(RangeError);
      expect((missingEntry as Error).message).toBe(
        `${name}: argument buf must hold its header's 3 entries (${header + 3 * entry} bytes), ` +
        `got ${header + 3 * entry - 1}`,
      );

      expect(thrown(() => call(-1, counted(header, entry, 3)))).toBeInstanceOf(KvmError);
      expect(thrown(() => call(-1, counted(header, entry, 0)))).toBeInstanceOf(KvmError);
    });

  it('the bitmap helpers name a wrong-typed argument and refuse ranges outside their bitmaps', () => {
    const words = new Int32Array(2); // 64 pages
    expect((thrown(() => native.bitmapOrLog(new Float64Array(2) as never, 0, new Uint8Array(8), 1)) as Error).message)
      .toBe('bitmapOrLog: argument dst must be an Int32Array or Uint32Array');
    expect(thrown(() => native.bitmapOrLog(words, 1, new Uint8Array(8), 64))).toBeInstanceOf(RangeError);
    expect(thrown(() => native.bitmapOrLog(words, 0, new Uint8Array(4), 64))).toBeInstanceOf(RangeError);
    expect(native.bitmapOrLog(words, 0, new Uint8Array(8), 64)).toBe(false);
    expect((thrown(() => native.bitmapTake(words, new Uint8Array(8) as never)) as Error).message)
      .toBe('bitmapTake: argument dst must be an Int32Array or Uint32Array');
    expect(thrown(() => native.bitmapTake(words, new Uint32Array(1)))).toBeInstanceOf(RangeError);
    expect((thrown(() => native.bitmapTakeOr(words, new Uint8Array(8) as never)) as Error).message)
      .toBe('bitmapTakeOr: argument dst must be an Int32Array or Uint32Array');
    expect(thrown(() => native.bitmapTakeOr(words, new Uint32Array(1)))).toBeInstanceOf(RangeError);
    expect((thrown(() => native.bitmapCount(new Uint8Array(8) as never)) as Error).message)
      .toBe('bitmapCount: argument bitmap must be an Int32Array or Uint32Array');
  });

  it('the bitmap helpers read a log at any byte offset', () => {
    const words = new Int32Array(4);
    const bytes = new Uint8Array(17);
    bytes[1 + 4] = 0x80; // bit 39 of a log that starts at byte 1
    expect(native.bitmapOrLog(words, 3, bytes.subarray(1), 120)).toBe(true);
    const out = new Uint32Array(4);
    expect(native.bitmapTake(words, out)).toBe(1);
    expect(out[1]).toBe(1 << 10); // page 42
  });

  it('counted structs may sit at an unaligned offset', () => {
    const backing = new Uint8Array(1 + 8 + 16);
    const buf = backing.subarray(1);
    new DataView(buf.buffer, buf.byteOffset).setUint32(0, 1, true);
    expectKvmError(() => native.kvmGetMsrs(-1, buf), 'KVM_GET_MSRS', EBADF);
  });

  it('kvmClearDirtyLog needs the bitmap for numPages rounded up to u64 words', () => {
    const error = thrown(() => native.kvmClearDirtyLog(-1, 0, 0, 65, new Uint8Array(8)));
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toMatch(/^kvmClearDirtyLog: argument bitmap /);
    expectKvmError(() => native.kvmClearDirtyLog(-1, 0, 0, 65, new Uint8Array(16)), 'KVM_CLEAR_DIRTY_LOG', EBADF);
  });

  it('kvmEnableCap needs a BigUint64Array of at least 4 args', () => {
    const short = thrown(() => native.kvmEnableCap(-1, 0, 0, new BigUint64Array(3)));
    expect(short).toBeInstanceOf(RangeError);
    expect((short as Error).message).toMatch(/^kvmEnableCap: argument args /);
    const wrongType = thrown(() => native.kvmEnableCap(-1, 0, 0, new Uint8Array(32) as unknown as BigUint64Array));
    expect(wrongType).toBeInstanceOf(TypeError);
    expect((wrongType as Error).message).toBe('kvmEnableCap: argument args must be a BigUint64Array');
  });

  it('benchCountPioExits needs a whole kvm_run', () => {
    const error = thrown(() => native.benchCountPioExits(-1, new ArrayBuffer(KVM_RUN_SIZE - 1), 0x3f8, 0));
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toMatch(/^benchCountPioExits: argument run /);
  });

  it.each(fdEntries)('%s rejects a non-number fd with a TypeError naming it', (name, { call }) => {
    const error = thrown(() => call('3' as unknown as number));
    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toMatch(new RegExp(`^${name}: argument \\w*(fd|Fd) must be a number$`));
  });

  it.each(fdEntries)('%s rejects a fractional fd with a RangeError', (name, { call }) => {
    const error = thrown(() => call(1.5));
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toMatch(new RegExp(`^${name}: argument \\w*(fd|Fd) must be an int32$`));
  });

  it('a Uint8Array argument must be a Uint8Array', () => {
    const error = thrown(() => native.kvmGetRegs(-1, new Uint16Array(72) as unknown as Uint8Array));
    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toBe('kvmGetRegs: argument buf must be a Uint8Array');
  });

  it('64-bit quantities must be non-negative bigints', () => {
    const notBigint = thrown(() => native.kvmSetUserMemoryRegion(-1, 0, 0, 0 as unknown as bigint, 0n, 0n));
    expect(notBigint).toBeInstanceOf(TypeError);
    expect((notBigint as Error).message).toBe('kvmSetUserMemoryRegion: argument guestPhysAddr must be a bigint');
    const negative = thrown(() => native.kvmSetUserMemoryRegion(-1, 0, 0, 0n, -1n, 0n));
    expect(negative).toBeInstanceOf(RangeError);
    expect((negative as Error).message).toMatch(/^kvmSetUserMemoryRegion: argument memorySize /);
    const tooWide = thrown(() => native.ftruncate(-1, 2n ** 64n));
    expect(tooWide).toBeInstanceOf(RangeError);
  });

  it('u32 arguments reject negatives', () => {
    const error = thrown(() => native.kvmIrqLine(-1, -4, 1));
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toBe('kvmIrqLine: argument irq must be a uint32');
  });

  it('strings must be strings without NUL', () => {
    expect(thrown(() => native.open(3 as unknown as string))).toBeInstanceOf(TypeError);
    const error = thrown(() => native.memfdCreate('a\0b'));
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toBe('memfdCreate: argument name must not contain NUL');
  });

  it('setErrorConstructor needs a function', () => {
    const error = thrown(() => native.setErrorConstructor(undefined as unknown as typeof KvmError));
    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toMatch(/^setErrorConstructor: argument /);
  });
});

describe('memory mappings', () => {
  it('mmapAnonymous, bufferAddress and munmap round-trip', () => {
    const buffer = native.mmapAnonymous(4 * PAGE);
    expect(buffer).toBeInstanceOf(ArrayBuffer);
    expect(buffer.byteLength).toBe(4 * PAGE);
    const view = new Uint8Array(buffer);
    expect(view[PAGE + 3]).toBe(0);
    view[PAGE + 3] = 0xab;
    expect(new Uint8Array(buffer)[PAGE + 3]).toBe(0xab);

    const address = native.bufferAddress(buffer);
    expect(typeof address).toBe('bigint');
    expect(address).not.toBe(0n);
    expect(address % BigInt(PAGE)).toBe(0n);
    expect(native.bufferAddress(buffer)).toBe(address);

    // MADV_POPULATE_WRITE (23) maps pages in without changing them; a range past the end is refused.
    native.madvise(buffer, PAGE, 2 * PAGE, 23);
    expect(view[PAGE + 3]).toBe(0xab);
    expect(() => native.madvise(buffer, 3 * PAGE, 2 * PAGE, 23)).toThrow(/madvise: the range lies outside the buffer/);
    expect(thrown(() => native.madvise(buffer, 1, PAGE, 23))).toMatchObject({ syscall: 'madvise', code: 'EINVAL' });

    native.munmap(buffer);
    expect(buffer.byteLength).toBe(0);
    expect(view.byteLength).toBe(0);
    expect(view[PAGE + 3]).toBeUndefined();
    // Detached, so a second munmap reaches the kernel with (NULL, 0) and fails cleanly.
    expectKvmError(() => native.munmap(buffer), 'munmap', EINVAL);
  });

  it('two mmapShared views of one memfd see each other\'s writes', () => {
    const fd = native.memfdCreate('tsvmm-test-ram');
    try {
      native.ftruncate(fd, BigInt(2 * PAGE));
      const whole = native.mmapShared(fd, 2 * PAGE, 0);
      const secondPage = native.mmapShared(fd, PAGE, PAGE);
      expect(native.bufferAddress(whole)).not.toBe(native.bufferAddress(secondPage));

      new Uint8Array(whole)[PAGE + 7] = 0x5a;
      expect(new Uint8Array(secondPage)[7]).toBe(0x5a);
      new Uint8Array(secondPage)[0] = 0x11;
      expect(new Uint8Array(whole)[PAGE]).toBe(0x11);

      native.munmap(secondPage);
      expect(new Uint8Array(whole)[PAGE]).toBe(0x11);
      native.munmap(whole);
    } finally {
      native.close(fd);
    }
  });

  it('mmapShared at an unaligned offset throws EINVAL', () => {
    const fd = native.memfdCreate('tsvmm-test-offset');
    try {
      native.ftruncate(fd, BigInt(2 * PAGE));
      expectKvmError(() => native.mmapShared(fd, PAGE, 1), 'mmap', EINVAL);
    } finally {
      native.close(fd);
    }
  });

  it('a 4 GiB MAP_NORESERVE mapping costs nothing until touched', () => {
    const buffer = native.mmapAnonymous(2 ** 32);
    expect(buffer.byteLength).toBe(2 ** 32);
    new Uint8Array(buffer)[2 ** 32 - 1] = 1;
    native.munmap(buffer);
  });

  it('mmapPrivate starts on a 2 MiB boundary; mappingView sees the same bytes and owns nothing', () => {
    const size = 6 * 2 ** 20;
    const buffer = native.mmapPrivate(size);
    try {
      const address = native.bufferAddress(buffer);
      expect(address % BigInt(2 ** 21)).toBe(0n);
      const view = new Uint8Array(native.mappingView(address, size));
      new Uint8Array(buffer)[size - 1] = 0x5a;
      expect(view[size - 1]).toBe(0x5a);
      view[7] = 3;
      expect(new Uint8Array(buffer)[7]).toBe(3);
      expect(native.bufferAddress(view.buffer as ArrayBuffer)).toBe(address);
    } finally {
      native.munmap(buffer);
    }
    expectKvmError(() => native.mmapPrivate(0), 'mmap', EINVAL);
    expect(() => native.mappingView(0n, PAGE)).toThrow(/mappingView: address must be a page-aligned/);
    expect(() => native.mappingView(BigInt(PAGE + 1), PAGE)).toThrow(RangeError);
    expect(() => native.mappingView(4096 as unknown as bigint, PAGE)).toThrow(/argument address must be a bigint/);
  });

  it('a mapping above V8\'s 4 GiB ArrayBuffer limit is refused by V8, not by mmap', () => {
    // Node 20 caps an ArrayBuffer at 2^32 bytes; the addon unmaps what it mapped and lets V8's error through.
    const error = thrown(() => native.mmapAnonymous(2 ** 32 + PAGE));
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(KvmError);
  });

  it('read and write move an eventfd counter; poll reports it readable, and times out when it is not', () => {
    const fd = native.eventfd(0, 0);
    try {
      const pollfd = new Uint8Array(8);
      const v = new DataView(pollfd.buffer);
      v.setInt32(0, fd, true);
      v.setInt16(4, 1 /* POLLIN */, true);
      expect(native.poll(pollfd, 0)).toBe(0);
      const value = new Uint8Array(new BigUint64Array([3n]).buffer);
      expect(native.write(fd, value)).toBe(8);
      expect(native.poll(pollfd, 0)).toBe(1);
      expect(v.getInt16(6, true) & 1).toBe(1);
      const back = new Uint8Array(8);
      expect(native.read(fd, back)).toBe(8);
      expect(new BigUint64Array(back.buffer)[0]).toBe(3n);
      // An eventfd only takes 8-byte writes.
      expectKvmError(() => native.write(fd, new Uint8Array(4)), 'write', EINVAL);
    } finally {
      native.close(fd);
    }
  });

  it('fdWatch calls back on this thread while the fd is readable, and not after fdUnwatch; bad arguments are refused', async () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    try {
      const calls: number[] = [];
      const handle = native.fdWatch(fd, (errno) => {
        calls.push(errno);
        native.read(fd, new Uint8Array(8));
      });
      native.write(fd, new Uint8Array(new BigUint64Array([1n]).buffer));
      for (let i = 0; i < 100 && calls.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(calls).toEqual([0]);
      // An fd can have one watch per loop (libuv refuses a second).
      expectKvmError(() => native.fdWatch(fd, () => {}), 'uv_poll_init', EEXIST);
      native.fdUnwatch(handle);
      native.fdUnwatch(handle); // harmless
      native.write(fd, new Uint8Array(new BigUint64Array([1n]).buffer));
      await new Promise((r) => setTimeout(r, 30));
      expect(calls).toEqual([0]);
      // Watched again once unwatched: the loop let go of it.
      await new Promise((r) => setImmediate(r));
      const again = native.fdWatch(fd, () => { calls.push(-1); native.read(fd, new Uint8Array(8)); });
      for (let i = 0; i < 100 && calls.length === 1; i++) await new Promise((r) => setTimeout(r, 5));
      expect(calls).toEqual([0, -1]);
      native.fdUnwatch(again);
    } finally {
      native.close(fd);
    }
    expect(() => native.fdWatch(0, 'not a function' as unknown as () => void)).toThrow(TypeError);
    expect(() => native.fdUnwatch({} as never)).toThrow(TypeError);
  });

  it('pread and pwrite move bytes at an offset of a file, leave the file position alone, and refuse a bad offset', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-pio-'));
    try {
      const file = path.join(dir, 'img');
      writeFileSync(file, new Uint8Array(64));
      const fd = native.open(file);
      try {
        expect(native.pwrite(fd, Uint8Array.of(1, 2, 3), 10)).toBe(3);
        const back = new Uint8Array(5);
        expect(native.pread(fd, back, 9)).toBe(5);
        expect([...back]).toEqual([0, 1, 2, 3, 0]);
        expect(native.pread(fd, back, 62)).toBe(2); // short at the end
        expect(native.pread(fd, back, 64)).toBe(0);
        expect(native.read(fd, new Uint8Array(1))).toBe(1); // the position is still 0
        expect(() => native.pread(fd, back, -1)).toThrow(RangeError);
        expect(() => native.pwrite(fd, back, 2 ** 53)).toThrow(RangeError);
        const eventfd = native.eventfd(0, 0);
        try {
          expectKvmError(() => native.pread(eventfd, new Uint8Array(8), 0), 'pread', ESPIPE);
        } finally {
          native.close(eventfd);
        }
      } finally {
        native.close(fd);
      }
      expect([...readFileSync(file).subarray(9, 14)]).toEqual([0, 1, 2, 3, 0]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('socket, bind, sendto and setsockopt name their own failures; a datagram socket binds once', () => {
    expectKvmError(() => native.socket(12345, 2, 0), 'socket', EAFNOSUPPORT);
    const fd = native.socket(2 /* AF_INET */, 2 /* SOCK_DGRAM */ | 0o4000 /* SOCK_NONBLOCK */, 0);
    try {
      native.bind(fd, LOOPBACK_ANY_PORT);
      // A socket binds once.
      expectKvmError(() => native.bind(fd, LOOPBACK_ANY_PORT), 'bind', EINVAL);
      expectKvmError(() => native.sendto(fd, new Uint8Array(1), new Uint8Array([2, 0])), 'sendto', EINVAL);
      expectKvmError(() => native.read(fd, new Uint8Array(16)), 'read', EAGAIN);
      expect(() => native.bind(fd, new Uint8Array(1))).toThrow(RangeError);
      native.setsockoptInt(fd, 1 /* SOL_SOCKET */, 8 /* SO_RCVBUF */, 65536);
      expectKvmError(() => native.setsockoptInt(fd, 1, 12345, 1), 'setsockopt', ENOPROTOOPT);
    } finally {
      native.close(fd);
    }
  });

  it('poll of a closed fd reports POLLNVAL, and a negative count of entries is refused', () => {
    const pollfd = new Uint8Array(8);
    const v = new DataView(pollfd.buffer);
    v.setInt32(0, NEVER_OPEN_FD, true);
    v.setInt16(4, 1, true);
    expect(native.poll(pollfd, 0)).toBe(1);
    expect(v.getInt16(6, true) & 0x20 /* POLLNVAL */).toBe(0x20);
    expect(() => native.poll(new Uint8Array(4), 0)).toThrow(RangeError);
  });

  it('TUNSETIFF on an eventfd throws EINVAL-or-ENOTTY under its own name, and long names are refused', () => {
    const fd = native.eventfd(0, 0);
    try {
      const error = thrown(() => native.tunSetIff(fd, 'tsvmm0', 0x1002)) as KvmError;
      expect(error.syscall).toBe('TUNSETIFF');
      expect([EINVAL, ENOTTY]).toContain(error.errno);
      expect(() => native.tunSetIff(fd, 'x'.repeat(16), 0x1002)).toThrow(RangeError);
    } finally {
      native.close(fd);
    }
  });

  it('eventfd returns a new fd', () => {
    const a = native.eventfd(0, 0);
    const b = native.eventfd(5, 0);
    expect(a).toBeGreaterThanOrEqual(0);
    expect(b).not.toBe(a);
    native.close(a);
    native.close(b);
  });
});

describe('threads and signals', () => {
  it('gettid is the calling thread\'s id', () => {
    const tid = native.gettid();
    expect(Number.isInteger(tid)).toBe(true);
    expect(tid).toBeGreaterThan(0);
    expect(native.gettid()).toBe(tid);
  });

  it('schedYield returns, with nothing else to run or not', () => {
    for (let i = 0; i < 100; i++) expect(native.schedYield()).toBeUndefined();
  });

  it('sigrtmin is glibc\'s SIGRTMIN', () => {
    expect(native.sigrtmin()).toBeGreaterThanOrEqual(32);
    expect(native.sigrtmin() + 4).toBeLessThanOrEqual(64);
  });

  it('tgkill of our own thread with the empty handler installed does not kill the process', () => {
    const signo = native.sigrtmin() + 4;
    native.installEmptySignalHandler(signo);
    for (let i = 0; i < 10; i++) native.tgkill(native.gettid(), signo);
    // Signal 0 only checks that the thread exists.
    native.tgkill(native.gettid(), 0);
  });
});

describe('worker threads', () => {
  const addonFile = path.join(packageRoot, 'build', 'Release', 'tsvmm.node');

  // A worker cannot import the TypeScript sources, so it loads the .node file and registers its
  // own error class: that the worker sees its class while this thread keeps seeing KvmError is
  // what per-instance data is for.
  const workerSource = `
    const { parentPort, workerData } = require('node:worker_threads');
    const native = require(workerData.file);
    const result = { tid: native.gettid() };
    try { native.kvmGetRegs(-1, new Uint8Array(144)); } catch (e) {
      result.beforeRegister = { isError: e instanceof Error, message: e.message };
    }
    class WorkerKvmError extends Error {
      constructor(syscall, errno) { super(syscall + ':' + errno); this.syscall = syscall; this.errno = errno; }
    }
    native.setErrorConstructor(WorkerKvmError);
    try { native.kvmGetRegs(-1, new Uint8Array(144)); } catch (e) {
      result.afterRegister = { isWorkerError: e instanceof WorkerKvmError, syscall: e.syscall, errno: e.errno };
    }
    try { native.open('/nonexistent'); } catch (e) {
      result.open = { isWorkerError: e instanceof WorkerKvmError, syscall: e.syscall, errno: e.errno };
    }
    const ram = native.mmapAnonymous(4096);
    new Uint8Array(ram)[0] = 1;
    native.munmap(ram);
    result.detached = ram.byteLength === 0;
    parentPort.postMessage(result);
  `;

  interface WorkerResult {
    tid: number;
    beforeRegister?: { isError: boolean; message: string };
    afterRegister?: { isWorkerError: boolean; syscall: string; errno: number };
    open?: { isWorkerError: boolean; syscall: string; errno: number };
    detached: boolean;
  }

  function runWorker(): Promise<WorkerResult> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(workerSource, { eval: true, workerData: { file: addonFile } });
      let result: WorkerResult | undefined;
      worker.once('message', (message: WorkerResult) => { result = message; });
      worker.once('error', reject);
      worker.once('exit', (code) => {
        if (result !== undefined && code === 0) resolve(result);
        else reject(new Error(`worker exited with ${code} without a result`));
      });
    });
  }

  it('loads its own addon instance with its own error constructor and thread id', async () => {
    const results = await Promise.all([runWorker(), runWorker()]);
    for (const result of results) {
      expect(result.tid).not.toBe(native.gettid());
      expect(result.beforeRegister?.isError).toBe(true);
      expect(result.beforeRegister?.message).toMatch(/KVM_GET_REGS.*errno 9.*setErrorConstructor/);
      expect(result.afterRegister).toEqual({ isWorkerError: true, syscall: 'KVM_GET_REGS', errno: EBADF });
      expect(result.open).toEqual({ isWorkerError: true, syscall: 'open', errno: ENOENT });
      expect(result.detached).toBe(true);
    }
    expect(results[0]!.tid).not.toBe(results[1]!.tid);
    // The workers' registrations and teardown left this thread's instance alone.
    expectKvmError(() => native.kvmGetRegs(-1, new Uint8Array(144)), 'KVM_GET_REGS', EBADF);
  });
});
