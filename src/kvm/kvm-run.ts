/**
 * struct kvm_run, the page KVM shares with userspace for each vCPU (mapped from the vCPU fd). Exits are
 * read in place through a DataView: on the exit path a number and a DataView cost ~25 ns where a
 * decoded object costs ~700 ns, so nothing here allocates per exit.
 */
import type { NativeAddon } from './addon-types.js';
import { Errno } from './constants.js';
import { KvmError } from './kvm-error.js';

/** Byte offsets inside struct kvm_run (x86-64). */
export const KvmRunOffset = {
  REQUEST_INTERRUPT_WINDOW: 0,
  IMMEDIATE_EXIT: 1,
  EXIT_REASON: 8,
  READY_FOR_INTERRUPT_INJECTION: 12,
  IF_FLAG: 13,
  /** The exit union starts here. */
  EXIT: 32,
  // KVM_EXIT_IO: { u8 direction; u8 size; u16 port; u32 count; u64 data_offset; }
  IO_DIRECTION: 32,
  IO_SIZE: 33,
  IO_PORT: 34,
  IO_COUNT: 36,
  IO_DATA_OFFSET: 40,
  // KVM_EXIT_MMIO: { u64 phys_addr; u8 data[8]; u32 len; u8 is_write; }
  MMIO_PHYS_ADDR: 32,
  MMIO_DATA: 40,
  MMIO_LEN: 48,
  MMIO_IS_WRITE: 52,
  // KVM_EXIT_FAIL_ENTRY: { u64 hardware_entry_failure_reason; u32 cpu; }
  FAIL_ENTRY_REASON: 32,
  // KVM_EXIT_INTERNAL_ERROR: { u32 suberror; u32 ndata; u64 data[16]; }; for suberror 1 (emulation)
  // data is { u64 flags; u8 insn_size; u8 insn_bytes[15]; ... } (struct emulation_failure).
  INTERNAL_SUBERROR: 32,
  INTERNAL_NDATA: 36,
  EMULATION_FAILURE_FLAGS: 40,
  EMULATION_FAILURE_INSN_SIZE: 48,
  EMULATION_FAILURE_INSN_BYTES: 49,
  // KVM_EXIT_SYSTEM_EVENT: { u32 type; u32 ndata; u64 data[16]; }
  SYSTEM_EVENT_TYPE: 32,
} as const;

/**
 * KVM_RUN on a vCPU fd. Returns 0 when the vCPU exited with an exit to handle in kvm_run, EINTR when a
 * signal or immediate_exit kicked it, or EAGAIN when an AP waiting for INIT/SIPI
 * (KVM_MP_STATE_UNINITIALIZED) got its SIPI and must simply be entered again (kvm_arch_vcpu_ioctl_run,
 * arch/x86/kvm/x86.c); throws a KvmError for any other errno.
 *
 * The addon returns the errno rather than throwing so that V8 can call it as a fast API call from the
 * optimized run loop; this is where that errno becomes the error every other wrapper throws.
 */
export function kvmRun(native: NativeAddon, vcpuFd: number): number {
  const errno = native.kvmRun(vcpuFd);
  if (errno === 0 || errno === Errno.EINTR || errno === Errno.EAGAIN) return errno;
  throw new KvmError('KVM_RUN', errno);
}
