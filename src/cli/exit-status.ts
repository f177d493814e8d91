/**
 * tsvmm's own exit statuses. They are all even, so none can be mistaken for a guest's debug-exit
 * status, which is always odd ((value << 1) | 1, as QEMU's isa-debug-exit).
 */
export const ExitStatus = {
  /** The guest powered off cleanly. */
  OK: 0,
  /** Bad command line or input file (usage, missing or non-multiboot kernel, bad size). */
  USAGE: 2,
  /** The host cannot run VMs: no /dev/kvm, no permission, KVM lacking a capability; or cannot give this one its RAM. */
  HOST: 4,
  /** The guest crashed (triple fault) or KVM failed to run it. */
  GUEST_CRASH: 6,
  /** A migration failed (`tsvmm migrate`), or an incoming one broke off: that guest never ran. */
  MIGRATION_FAILED: 8,
  /** A migration was cancelled (`tsvmm migrate`, Ctrl-C or migrate_cancel); the source guest runs on. */
  MIGRATION_CANCELLED: 10,
  /** `tsvmm migrate` cannot reach QMP, or lost it mid-migration. */
  CONTROL_UNREACHABLE: 12,
  /** Stopped by SIGINT (128 + 2), as shells report. */
  SIGINT: 130,
  /** Stopped by SIGTERM (128 + 15). */
  SIGTERM: 143,
} as const;
