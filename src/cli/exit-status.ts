/**
 * tsvmm's own exit statuses. They are all even, so none can be mistaken for a guest's debug-exit
 * status, which is always odd ((value << 1) | 1, as QEMU's isa-debug-exit).
 */
export const ExitStatus = {
  /** The guest powered off cleanly. */
  OK: 0,
  /** Bad command line or input file (usage, missing or non-multiboot kernel, bad size). */
  USAGE: 2,
  /** The host cannot run VMs: no /dev/kvm, no permission, KVM lacking a capability. */
  HOST: 4,
  /** The guest crashed (triple fault) or KVM failed to run it. */
  GUEST_CRASH: 6,
  /** Stopped by SIGINT (128 + 2), as shells report. */
  SIGINT: 130,
  /** Stopped by SIGTERM (128 + 15). */
  SIGTERM: 143,
} as const;
