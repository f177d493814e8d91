/**
 * KVM ABI numbers from <linux/kvm.h> (Documentation/virt/kvm/api.rst). Only what tsvmm uses; each
 * name is the kernel's, minus the KVM_ prefix where TypeScript's namespacing already says it.
 */

/** KVM_GET_API_VERSION must answer this; any other value is an incompatible kernel. */
export const KVM_API_VERSION = 12;

/** Capabilities, for KVM_CHECK_EXTENSION / KVM_ENABLE_CAP. */
export const Cap = {
  IRQCHIP: 0,
  HLT: 1,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  NR_MEMSLOTS: 10,
  PIT: 11,
  SYNC_MMU: 16,
  IOEVENTFD: 36,
  PIT2: 33,
  IRQFD: 32,
  SET_IDENTITY_MAP_ADDR: 37,
  ADJUST_CLOCK: 39,
  VCPU_EVENTS: 41,
  DEBUGREGS: 50,
  XSAVE: 55,
  XCRS: 56,
  READONLY_MEM: 81,
  IMMEDIATE_EXIT: 136,
  MAX_VCPUS: 66,
  MANUAL_DIRTY_LOG_PROTECT2: 168,
  DIRTY_LOG_RING: 192,
} as const;

/** kvm_run.exit_reason values. */
export const ExitReason = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
} as const;

/** The kernel's name of an exit reason, for error messages. */
export function exitReasonName(reason: number): string {
  for (const [name, value] of Object.entries(ExitReason)) if (value === reason) return `KVM_EXIT_${name}`;
  return `KVM_EXIT_${reason}`;
}

/** kvm_run.io.direction. */
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

/** kvm_run.system_event.type. */
export const SystemEvent = { SHUTDOWN: 1, RESET: 2, CRASH: 3 } as const;

/** kvm_userspace_memory_region.flags. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;

/** KVM_CREATE_PIT2 flags: KVM_PIT_SPEAKER_DUMMY makes port 0x61 reads work without a speaker. */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** kvm_mp_state.mp_state. */
export const MpState = { RUNNABLE: 0, UNINITIALIZED: 1, INIT_RECEIVED: 2, HALTED: 3, SIPI_RECEIVED: 4 } as const;

/** eventfd(2) flags. */
export const EFD_CLOEXEC = 0o2000000;
/** madvise advice (include/uapi/asm-generic/mman-common.h): release pages (private anonymous ones read back as zero). */
export const MADV_DONTNEED = 4;
/** madvise: back the range with transparent huge pages when THP is in "madvise" mode. */
export const MADV_HUGEPAGE = 14;
/** madvise: never back the range with transparent huge pages. */
export const MADV_NOHUGEPAGE = 15;
/** madvise: fault a range in, writable, in one call (Linux 5.14). */
export const MADV_POPULATE_WRITE = 23;
export const EFD_NONBLOCK = 0o4000;
/** struct pollfd events/revents bits (poll(2)). */
export const Poll = { IN: 0x1, ERR: 0x8, HUP: 0x10, NVAL: 0x20 } as const;
/** errno values the threads that wait on fds handle themselves: a signal interrupted the wait; nothing to read. */
export const Errno = { EINTR: 4, EAGAIN: 11 } as const;
/** socket(2): address families, the datagram type and its flags (the flags are O_NONBLOCK/O_CLOEXEC). */
export const Socket = { AF_INET: 2, AF_INET6: 10, SOCK_DGRAM: 2, SOCK_NONBLOCK: 0o4000, SOCK_CLOEXEC: 0o2000000 } as const;
/** setsockopt(2) at SOL_SOCKET: buffer sizes. */
export const SockOpt = { SOL_SOCKET: 1, SO_SNDBUF: 7, SO_RCVBUF: 8 } as const;
