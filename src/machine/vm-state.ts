import type { NativeAddon } from '../kvm/addon-types.js';
import { KVM_CLOCK_DATA_SIZE, KVM_IRQCHIP_SIZE, KVM_PIT_STATE2_SIZE } from '../kvm/structs.js';

/** kvm_irqchip.chip_id values: the two 8259 PICs and the IOAPIC. */
const IRQCHIP_IDS = [0, 1, 2] as const;
/** Offset of kvm_clock_data.flags. */
const CLOCK_FLAGS_OFFSET = 8;

/** The VM-wide in-kernel state: interrupt controllers, PIT and the KVM clock. */
export interface VmKernelState {
  readonly version: 1;
  readonly irqchips: Uint8Array[];
  readonly pit: Uint8Array;
  readonly clock: Uint8Array;
}

export function captureVmKernelState(native: NativeAddon, vmFd: number): VmKernelState {
  const into: VmKernelState = {
    version: 1,
    irqchips: IRQCHIP_IDS.map(() => new Uint8Array(KVM_IRQCHIP_SIZE)),
    pit: new Uint8Array(KVM_PIT_STATE2_SIZE),
    clock: new Uint8Array(KVM_CLOCK_DATA_SIZE),
  };
  captureVmKernelStateInto(native, vmFd, into);
  return into;
}

/** captureVmKernelState into the arrays of `into` (of the sizes it gives), in place: see stateRecordTemplate. */
export function captureVmKernelStateInto(native: NativeAddon, vmFd: number, into: VmKernelState): void {
  IRQCHIP_IDS.forEach((id, i) => {
    const b = into.irqchips[i]!;
    new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(0, id, true);
    native.kvmGetIrqchip(vmFd, b);
  });
  native.kvmGetPit2(vmFd, into.pit);
  native.kvmGetClock(vmFd, into.clock);
}

export function restoreVmKernelState(native: NativeAddon, vmFd: number, s: VmKernelState): void {
  if (s.version !== 1) throw new Error(`VM state version ${s.version} is not supported (this tsvmm reads version 1)`);
  for (const chip of s.irqchips) native.kvmSetIrqchip(vmFd, chip);
  native.kvmSetPit2(vmFd, s.pit);
  // The guest clock continues from the source's value, with no flags: the source's realtime and TSC
  // readings describe another host's clocks.
  const clock = s.clock.slice();
  new DataView(clock.buffer).setUint32(CLOCK_FLAGS_OFFSET, 0, true);
  native.kvmSetClock(vmFd, clock);
}
