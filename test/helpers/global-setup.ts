import { kvmAvailable } from './kvm.js';

export default function setup(): void {
  if (!kvmAvailable()) {
    process.stderr.write('\n*** SKIPPING every KVM test: /dev/kvm is missing or not read-writable on this host ***\n\n');
  }
}
