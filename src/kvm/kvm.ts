import { addon } from './addon.js';
import { Cap, KVM_API_VERSION } from './constants.js';
import { KvmError } from './kvm-error.js';
import { cpuid2Buffer, decodeCpuid2, type CpuidEntry } from './structs.js';

export const DEFAULT_KVM_PATH = '/dev/kvm';

/** KVM cannot be used on this host; the message says why and what to do. */
export class KvmUnavailableError extends Error {
  override name = 'KvmUnavailableError';
}

/** Capabilities tsvmm cannot run without. */
const REQUIRED_CAPS: readonly (keyof typeof Cap)[] = [
  'USER_MEMORY', 'IRQCHIP', 'PIT2', 'SET_TSS_ADDR', 'IMMEDIATE_EXIT', 'EXT_CPUID', 'SYNC_MMU',
];

/** The open /dev/kvm: system-level queries. */
export class Kvm {
  private constructor(readonly fd: number, readonly path: string) {}

  static open(path: string = DEFAULT_KVM_PATH): Kvm {
    const native = addon();
    let fd: number;
    try {
      fd = native.open(path);
    } catch (e) {
      if (e instanceof KvmError && e.code === 'ENOENT') {
        throw new KvmUnavailableError(`${path} does not exist: this host has no KVM (enable virtualization, load kvm_intel or kvm_amd)`, { cause: e });
      }
      if (e instanceof KvmError && (e.code === 'EACCES' || e.code === 'EPERM')) {
        throw new KvmUnavailableError(`no permission to open ${path}: add your user to the 'kvm' group or run as root`, { cause: e });
      }
      if (e instanceof KvmError && (e.code === 'ENODEV' || e.code === 'ENXIO')) {
        throw new KvmUnavailableError(`${path} exists but no KVM driver is bound to it (${e.code}): load kvm_intel or kvm_amd`, { cause: e });
      }
      throw e;
    }
    const kvm = new Kvm(fd, path);
    try {
      let version: number;
      try {
        version = native.kvmGetApiVersion(fd);
      } catch (e) {
        if (e instanceof KvmError && e.code === 'ENOTTY') {
          throw new KvmUnavailableError(`${path} is not a KVM device (${e.message})`, { cause: e });
        }
        throw e;
      }
      if (version !== KVM_API_VERSION) {
        throw new KvmUnavailableError(`${path} speaks KVM API version ${version}; tsvmm needs ${KVM_API_VERSION}`);
      }
      const missing = REQUIRED_CAPS.filter((c) => native.kvmCheckExtension(fd, Cap[c]) <= 0);
      if (missing.length > 0) {
        throw new KvmUnavailableError(`KVM on this host lacks ${missing.map((c) => `KVM_CAP_${c}`).join(', ')}`);
      }
    } catch (e) {
      kvm.close();
      throw e;
    }
    return kvm;
  }

  checkExtension(cap: number): number {
    return addon().kvmCheckExtension(this.fd, cap);
  }

  vcpuMmapSize(): number {
    return addon().kvmGetVcpuMmapSize(this.fd);
  }

  /** KVM_GET_SUPPORTED_CPUID, growing the table until the kernel's fits (it answers E2BIG until then). */
  supportedCpuid(): CpuidEntry[] {
    for (let capacity = 64; ; capacity *= 2) {
      const buf = cpuid2Buffer(capacity);
      try {
        return decodeCpuid2(buf, addon().kvmGetSupportedCpuid(this.fd, buf));
      } catch (e) {
        if (!(e instanceof KvmError && e.code === 'E2BIG') || capacity >= 4096) throw e;
      }
    }
  }

  close(): void {
    addon().close(this.fd);
  }
}
