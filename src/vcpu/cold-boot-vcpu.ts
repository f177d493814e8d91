import type { NativeAddon } from '../kvm/addon-types.js';
import { KVM_LAPIC_SIZE } from '../kvm/structs.js';
import { bootFpu, bootMsrs, withBootLints } from './cold-boot.js';

/**
 * Gives vCPU `fd` the cold-boot state Firecracker gives every vCPU before a Linux boot (its
 * vstate/vcpu configure): reset FPU, the boot MSRs, and LINT0/LINT1 in ExtINT/NMI mode.
 */
export function coldBootVcpu(native: NativeAddon, fd: number): void {
  native.kvmSetFpu(fd, bootFpu());
  const msrs = bootMsrs();
  const written = native.kvmSetMsrs(fd, msrs.buffer);
  if (written !== msrs.count) throw new Error(`KVM_SET_MSRS set ${written} of ${msrs.count} boot MSRs: KVM refuses MSR #${written}`);
  const lapic = new Uint8Array(KVM_LAPIC_SIZE);
  native.kvmGetLapic(fd, lapic);
  native.kvmSetLapic(fd, withBootLints(lapic));
}
