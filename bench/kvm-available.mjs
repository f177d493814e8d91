import { accessSync, constants } from 'node:fs';

/** Whether /dev/kvm exists and is read-writable. */
export function kvmAvailable() {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
