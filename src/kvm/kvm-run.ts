/**
 * struct kvm_run, the page KVM shares with userspace for each vCPU (mapped from the vCPU fd). Exits are
 * read in place through a DataView: on the exit path a number and a DataView cost ~25 ns where a
 * decoded object costs ~700 ns, so nothing here allocates per exit.
 */

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
  // KVM_EXIT_INTERNAL_ERROR: { u32 suberror; u32 ndata; u64 data[16]; }
  INTERNAL_SUBERROR: 32,
  // KVM_EXIT_SYSTEM_EVENT: { u32 type; u32 ndata; u64 data[16]; }
  SYSTEM_EVENT_TYPE: 32,
} as const;
