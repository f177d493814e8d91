import type { CpuidEntry } from '../kvm/structs.js';

/** CPUID.1:ECX bit 31: "running under a hypervisor" (reserved for that use by Intel and AMD). */
const CPUID1_ECX_HYPERVISOR = 1 << 31;
/** CPUID.1:EBX bits 31-24: initial APIC ID; bits 23-16: logical processors per package. */
const CPUID1_EBX_APIC_ID_SHIFT = 24;
const CPUID1_EBX_COUNT_SHIFT = 16;
/** CPUID.1:EDX bit 28: HTT, meaning EBX[23:16] is valid. */
const CPUID1_EDX_HTT = 1 << 28;

/** CPUID.0BH:ECX[15:8] level types. */
const TOPOLOGY_LEVEL_SMT = 1;
const TOPOLOGY_LEVEL_CORE = 2;

/** Bits of APIC ID that select among `count` processors (CPUID.0BH:EAX[4:0] of the core level). */
function apicIdBits(count: number): number {
  return count <= 1 ? 0 : Math.ceil(Math.log2(count));
}

/**
 * The CPUID table for vCPU `index` of `count`: what KVM supports, with the per-CPU APIC ID and the
 * package's logical processor count filled in (leaf 1 and the x2APIC topology leaf 0xB), and the
 * hypervisor bit set. A pure function of KVM's table, so it is tested without /dev/kvm.
 */
export function cpuidForVcpu(supported: readonly CpuidEntry[], index: number, count: number): CpuidEntry[] {
  return supported.map((e) => {
    const entry = { ...e };
    if (entry.function === 1) {
      entry.ebx = ((entry.ebx & 0x0000_ffff) | (index << CPUID1_EBX_APIC_ID_SHIFT) | ((count & 0xff) << CPUID1_EBX_COUNT_SHIFT)) >>> 0;
      entry.ecx = (entry.ecx | CPUID1_ECX_HYPERVISOR) >>> 0;
      entry.edx = (count > 1 ? entry.edx | CPUID1_EDX_HTT : entry.edx & ~CPUID1_EDX_HTT) >>> 0;
    } else if (entry.function === 0xb) {
      // The extended topology leaf, as Firecracker fills it: one thread per core (SMT level 0) and
      // `count` cores in the package (core level 1); levels above are invalid.
      entry.edx = index >>> 0; // x2APIC ID of this logical processor, at every level
      if (entry.index === 0) {
        entry.eax = 0;
        entry.ebx = 1;
        entry.ecx = TOPOLOGY_LEVEL_SMT << 8;
      } else if (entry.index === 1) {
        entry.eax = apicIdBits(count);
        entry.ebx = count;
        entry.ecx = 1 | (TOPOLOGY_LEVEL_CORE << 8);
      } else {
        entry.eax = 0;
        entry.ebx = 0;
        entry.ecx = entry.index & 0xff;
      }
    }
    return entry;
  });
}
