import { accessSync, constants, existsSync } from 'node:fs';

/** Whether /dev/kvm exists and is read-writable. */
export function kvmAvailable() {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether /dev/kvm is the kvm_pvm backend (guest CPL0 code emulated, CPL3 native): this host's own
 * KVM, though the host is a VM; test/helpers/kvm.ts asks the same for the tests.
 */
export function kvmIsPvm() {
  return existsSync('/sys/module/kvm_pvm');
}
