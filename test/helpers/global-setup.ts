import { kvmAvailable } from './kvm.js';

/**
 * Without /dev/kvm the KVM suites (*.kvm.test.ts) skip, and this says so once, loudly. Where KVM is
 * required (TSVMM_REQUIRE_KVM=1, as `npm run test:kvm` sets inside nested KVM), its absence fails the run.
 */
export default function setup(): void {
  if (kvmAvailable()) return;
  if (process.env.TSVMM_REQUIRE_KVM === '1') {
    throw new Error('TSVMM_REQUIRE_KVM=1 but /dev/kvm is missing or not read-writable');
  }
  process.stderr.write('\n*** SKIPPING every KVM test: /dev/kvm is missing or not read-writable on this host (run `npm run test:kvm` for nested KVM) ***\n\n');
}
