import { constants, accessSync, existsSync } from 'node:fs';
import { describe } from 'vitest';

/** Whether this host can run the KVM tests: /dev/kvm exists and is read-writable. */
export function kvmAvailable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** `describe` for suites that need real KVM; skipped (with the loud line from global-setup) without it. */
export const describeKvm = kvmAvailable() ? describe : describe.skip;

/**
 * Whether /dev/kvm is the kvm_pvm backend, which emulates guest CPL0 code (about 2 million
 * instructions per second) and runs CPL3 natively. Where that host's limits show (a triple fault it
 * reports as an emulation failure, a Linux boot that ends in one), tests say so and expect what it does.
 */
export function kvmIsPvm(): boolean {
  return existsSync('/sys/module/kvm_pvm');
}
