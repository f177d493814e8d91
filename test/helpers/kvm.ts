import { constants, accessSync } from 'node:fs';
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
