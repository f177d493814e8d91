import { KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR, MiB } from '../arch/x86/layout.js';
import { BootError } from '../boot/boot-error.js';
import { bootFileRange, readKernelFile } from '../boot/kernel-file.js';
import type { KernelImage } from '../boot/kernel-image.js';
import { loadLinux, planLinuxBoot, type FileRange, type LinuxKernel } from '../boot/linux.js';
import { memoryMap } from '../boot/memory-map.js';
import { loadMultiboot, type MultibootKernel } from '../boot/multiboot.js';
import { addon } from '../kvm/addon.js';
import { KVM_PIT_SPEAKER_DUMMY } from '../kvm/constants.js';
import { Kvm } from '../kvm/kvm.js';
import {
  KVM_SREGS_SIZE, decodeSregs, encodeCpuid2, encodeRegs, encodeSregs,
} from '../kvm/structs.js';
import { GuestMemory, ramLayout, type GuestMemoryTestOptions } from '../memory/guest-memory.js';
import { DirtyTracker } from '../memory/dirty-tracker.js';
import { MemslotMap } from '../memory/memslot-map.js';
import { Cap } from '../kvm/constants.js';
import { multibootEntryState } from '../vcpu/boot-state.js';
import { cpuidForVcpu } from '../vcpu/cpuid.js';
import { coldBootVcpu } from '../vcpu/cold-boot-vcpu.js';
import { linuxEntryState } from '../vcpu/linux-boot-state.js';
import type { VcpuStop } from '../vcpu/exit-handler.js';
import { VcpuThreads } from '../vcpu/vcpu-threads.js';
import type { PrestartedThread } from '../vcpu/prestarted-thread.js';
import {
  boardDevices, cmosRtc, comPortUart, fdTransmitter, keyboardController, newBoard, type BoardDescription,
} from './board.js';
import { VirtioDevices, type VirtioDeviceSpec } from './virtio-devices.js';
import { tracePhase } from './phase-trace.js';
import type { I8042, I8042State } from '../devices/i8042.js';
import type { RtcCmos, RtcState } from '../devices/rtc-cmos.js';
import { captureVmKernelState, captureVmKernelStateInto, restoreVmKernelState, type VmKernelState } from './vm-state.js';
import { captureVcpuState, captureVcpuStateInto, copyVcpuState, copyVcpuStateInto, msrIndexList, restoreVcpuState, type VcpuState } from '../vcpu/vcpu-state.js';
import type { UartState } from '../devices/uart8250.js';
import type { MachineShape } from '../migration/protocol.js';
import type { Uart8250 } from '../devices/uart8250.js';

/** What a VM is built from. */
export interface VmConfig {
  /** A multiboot kernel, a Linux bzImage or an ELF64 vmlinux (see boot/kernel-image.ts). */
  readonly kernelPath: string;
  /** An initrd/initramfs for a Linux kernel. */
  readonly initrdPath?: string;
  /** The kernel already read and checked by planBoot (the CLI does so before opening KVM). */
  readonly plan?: BootPlan;
  readonly memBytes: number;
  readonly cpus: number;
  readonly cmdline: string;
  /** Where the serial console's output goes (1 = stdout). */
  readonly serialOutputFd: number;
  readonly kvmPath?: string;
  /** virtio devices with their backends open, in slot order (the first lands where QEMU puts the first). */
  readonly virtio?: readonly VirtioDeviceSpec[];
  /**
   * Use KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 where KVM has it (default true): KVM_GET_DIRTY_LOG then only
   * reads, and KVM_CLEAR_DIRTY_LOG re-protects just the pages taken. False forces the older protocol,
   * where KVM_GET_DIRTY_LOG clears and re-protects the whole slot (bench/dirty-sync compares both).
   */
  readonly manualDirtyLogProtect?: boolean;
  /**
   * Transparent huge pages for guest RAM (default true, as QEMU asks for them); false asks the kernel
   * for none (MADV_NOHUGEPAGE), as bench/dirty-sync measures syncs.
   */
  readonly hugePages?: boolean;
  /**
   * Allocate all guest RAM at start (QEMU's -mem-prealloc) instead of at each page's first write:
   * the VM fails to start, with a clear error, where the host cannot give it its memory, and nothing
   * later (a guest's first pass over RAM, an incoming migration) waits for the host to find pages.
   */
  readonly preallocateMemory?: boolean;
  /**
   * The VM will take its guest from an incoming migration: from creation on (the loader's writes
   * included) every VMM write to RAM is marked (GuestMemory.setLogging), until start() first lets the
   * guest run. Its RAM is then zero wherever no page is marked (ramZeroUnlessMarked), so the stream's
   * zero pages need not be written where RAM is still as it was allocated.
   */
  readonly incoming?: boolean;
  /** A vCPU thread started early for vCPU 0 (see vcpu/prestarted-thread.ts); otherwise started by start(). */
  readonly prestartedVcpuThread?: PrestartedThread;
  /** Switches that turn safety invariants off, so tests can show the failure is caught. Tests only. */
  readonly testOnly?: GuestMemoryTestOptions & {
    readonly skipSyncBeforeDelete?: boolean;
    /** With `incoming`: the loader's writes go unmarked, yet ramZeroUnlessMarked is claimed all the same. */
    readonly unmarkedLoader?: boolean;
  };
}

/** The smallest RAM a multiboot guest gets: the loader's low-memory data plus a kernel at 1 MiB. */
export const MIN_MEM_BYTES = 2 * MiB;
/** KVM's own per-VM vCPU limit is larger; this is what the board (one IOAPIC, xAPIC IDs) supports. */
export const MAX_CPUS = 254;

/**
 * How long an incoming VM's start() naps its thread for the vCPU threads standing by to leave their
 * park (VcpuThreads.handOver): they take ~0.015 ms on a CPU of their own.
 */
const VCPU_HAND_OVER_MS = 1;

export class VmConfigError extends Error {
  override name = 'VmConfigError';
}

/** A validated kernel with everything it boots with, read before any KVM object exists. */
export type BootPlan =
  | { readonly kind: 'multiboot'; readonly kernel: MultibootKernel; readonly cmdline: string }
  | { readonly kind: 'linux'; readonly kernel: LinuxKernel; readonly cmdline: string; readonly initrd?: FileRange };

/**
 * Reads the kernel (and initrd) and checks that they boot in a VM of this shape: format, command-line
 * limits, the kernel and initrd fitting in RAM. Pure apart from reading the files, so the CLI reports
 * bad input before opening /dev/kvm; every error names the file and what to do.
 */
export function planBoot(
  config: Pick<VmConfig, 'kernelPath' | 'initrdPath' | 'cmdline' | 'memBytes' | 'cpus'>,
  image: KernelImage = readKernelFile(config.kernelPath),
): BootPlan {
  if (image.kind === 'multiboot') {
    if (config.initrdPath !== undefined) {
      throw new BootError(`${config.kernelPath} is a multiboot kernel: --initrd is for Linux kernels (bzImage or vmlinux)`);
    }
    if (image.kernel.end > config.memBytes) {
      throw new VmConfigError(`${config.kernelPath} needs RAM up to 0x${image.kernel.end.toString(16)}: give the VM more memory (--mem)`);
    }
    return { kind: 'multiboot', kernel: image.kernel, cmdline: config.cmdline };
  }
  const initrd = config.initrdPath === undefined ? undefined : bootFileRange('initrd', config.initrdPath);
  try {
    planLinuxBoot(image.kernel, memoryMap(ramLayout(config.memBytes)), { cmdline: config.cmdline, initrd, cpus: config.cpus });
  } catch (e) {
    if (e instanceof BootError) throw new BootError(`${config.kernelPath}: ${e.message}`);
    throw e;
  }
  return { kind: 'linux', kernel: image.kernel, cmdline: config.cmdline, initrd };
}

/**
 * A VM: KVM's VM and vCPUs, guest memory, and the vCPU threads. Built in a fixed, visible order by
 * `Vm.create`; everything it opens, `dispose` closes.
 */
export class Vm {
  private disposed = false;

  private constructor(
    private readonly kvm: Kvm,
    readonly vmFd: number,
    readonly memory: GuestMemory,
    private readonly vcpuFds: readonly number[],
    readonly vcpus: VcpuThreads,
    private readonly devices: { readonly uart: Uart8250; readonly i8042: I8042; readonly rtc: RtcCmos },
    /** The board description every vCPU thread builds its buses from. */
    readonly board: BoardDescription,
    /** KVM's size of each vCPU's kvm_run mapping. */
    readonly runMmapSize: number,
    /** The VM's memory slots, changed at run time by loaders and devices (ROM and MMIO windows). */
    readonly memslots: MemslotMap,
    /** Dirty-page tracking, for migration and COLO. */
    readonly dirty: DirtyTracker,
    /** The MSRs KVM saves for a guest (KVM_GET_MSR_INDEX_LIST), captured with each vCPU. */
    private readonly msrIndices: readonly number[],
    /** virtio-blk and virtio-net, served on this (the main) thread. */
    readonly virtio: VirtioDevices,
  ) {}

  /** Nesting depth of pause(), mirrored from the vCPUs so devices resume with them. */
  private pauseDepth = 0;

  /** What a migration peer must match: RAM layout, vCPU count, devices. */
  shape(): MachineShape {
    return {
      memBytes: this.memory.sizeBytes,
      cpus: this.vcpuFds.length,
      regions: this.memory.regions.map((r) => ({ start: r.start, sizeBytes: r.sizeBytes })),
      devices: boardDevices(this.board),
    };
  }

  /**
   * Every piece of VM state outside RAM, by name: the in-kernel irqchips, PIT and clock ("vm"), each
   * vCPU ("vcpu0", ...) and each device ("uart", "i8042", "rtc"). Only while paused. The "vm" and vCPU
   * pieces are read in place into the states `into` holds under their names, where it holds one (a
   * state of the shape captureState gives, such as a stateRecordTemplate's), and that same object is
   * then the piece's state; a vCPU whose MSRs do not fit its state's is read afresh. A vCPU its own
   * thread read as it parked (pause with captureState) is taken from that read.
   */
  captureState(into: ReadonlyMap<string, unknown> = new Map()): { name: string; state: unknown }[] {
    if (!this.vcpus.isPaused() && this.vcpus.isStarted) throw new Error('VM state can only be captured while the VM is paused');
    const native = addon();
    const vmInto = into.get('vm') as VmKernelState | undefined;
    if (vmInto !== undefined) captureVmKernelStateInto(native, this.vmFd, vmInto);
    return [
      { name: 'vm', state: vmInto ?? captureVmKernelState(native, this.vmFd) },
      ...this.vcpuFds.map((fd, i) => {
        const name = `vcpu${i}`;
        const vcpuInto = into.get(name) as VcpuState | undefined;
        // Read by its thread at the pause (pause with captureState), or else here.
        const captured = this.vcpus.capturedState(i);
        if (captured !== undefined) {
          if (vcpuInto !== undefined && copyVcpuStateInto(captured, vcpuInto)) return { name, state: vcpuInto };
          return { name, state: copyVcpuState(captured) };
        }
        if (vcpuInto !== undefined && captureVcpuStateInto(native, fd, this.msrIndices, vcpuInto)) return { name, state: vcpuInto };
        return { name, state: captureVcpuState(native, fd, this.msrIndices) };
      }),
      ...this.boardDeviceStates(),
      ...this.virtio.captureState(),
    ];
  }

  /** Each vCPU's state piece; only while its thread is outside KVM_RUN. */
  private vcpuStates(): { name: string; state: unknown }[] {
    const native = addon();
    return this.vcpuFds.map((fd, i) => ({ name: `vcpu${i}`, state: captureVcpuState(native, fd, this.msrIndices) }));
  }

  /** The board devices' state pieces: shared registers this thread can read at any time, consistent with the guest only while its vCPUs are paused. */
  private boardDeviceStates(): { name: string; state: unknown }[] {
    return [
      { name: 'uart', state: this.devices.uart.state() },
      { name: 'i8042', state: this.devices.i8042.state() },
      { name: 'rtc', state: this.devices.rtc.state() },
    ];
  }

  /**
   * The pieces of captureState that can be read while the guest runs (the in-kernel irqchips, PIT and
   * clock, and the board devices), for rehearsal only: not a consistent snapshot, never to be sent.
   * A migration source encodes them right before it pauses the guest for its switch-over (see
   * PrecopySender), so that the encoder's first run is not paid in the guest's downtime.
   */
  rehearsalState(): { name: string; state: unknown }[] {
    return [{ name: 'vm', state: captureVmKernelState(addon(), this.vmFd) }, ...this.bootVcpuStates, ...this.boardDeviceStates()];
  }

  /**
   * Each vCPU's state as it was before the guest first ran (start() captures it), for rehearsals only.
   * A vCPU's registers can be read only while its thread is outside KVM_RUN, so this is the one chance
   * to rehearse their capture without stopping the guest: on kvm_pvm a migration's first capture took
   * 0.4-0.65 ms of its downtime, and one after a rehearsal 0.2-0.3 ms.
   */
  private bootVcpuStates: { name: string; state: unknown }[] = [];

  /** Loads state captured by captureState on a VM of the same shape, before its vCPUs start. */
  restoreState(pieces: ReadonlyMap<string, unknown>): void {
    const native = addon();
    const need = (name: string) => {
      if (!pieces.has(name)) throw new Error(`the migration stream carries no "${name}" state`);
      return pieces.get(name);
    };
    // Kernel irqchip state before the vCPUs' LAPICs, as KVM's own selftests order it.
    restoreVmKernelState(native, this.vmFd, need('vm') as VmKernelState);
    this.vcpuFds.forEach((fd, i) => restoreVcpuState(native, fd, need(`vcpu${i}`) as VcpuState));
    this.devices.uart.restore(need('uart') as UartState);
    this.devices.i8042.restore(need('i8042') as I8042State);
    this.devices.rtc.restore(need('rtc') as RtcState);
    this.virtio.restoreState(need);
  }

  /**
   * Captures this VM's in-kernel, vCPU and board-device state, passes each piece through `roundTrip`
   * (a migration's encode and decode) and restores what comes back: the calls an incoming migration
   * makes at switch-over, on this VM's own state, so nothing changes. Under emulation (nested KVM on
   * TCG) the first run of those paths (functions V8 compiles on first call, kernel paths the emulator
   * has not translated yet) took ~60 ms of the switch-over's downtime; rehearsed here, while the
   * stream is still to come, they cost the guest nothing. Only for an incoming VM whose guest has not
   * run (startParked, before start()); otherwise it does nothing. Resolves once the threads parked.
   */
  async rehearseStateRestore(roundTrip: (name: string, state: unknown) => unknown): Promise<void> {
    if (!this.parkedAtStart) return;
    await this.vcpus.pause(); // resolves once every thread has parked
    try {
      if (!this.parkedAtStart) return; // start() came meanwhile: the guest's real state is in
      const native = addon();
      const back = roundTrip;
      restoreVmKernelState(native, this.vmFd, back('vm', captureVmKernelState(native, this.vmFd)) as VmKernelState);
      this.vcpuFds.forEach((fd, i) => restoreVcpuState(native, fd, back(`vcpu${i}`, captureVcpuState(native, fd, this.msrIndices)) as VcpuState));
      this.devices.uart.restore(back('uart', this.devices.uart.state()) as UartState);
      this.devices.i8042.restore(back('i8042', this.devices.i8042.state()) as I8042State);
      this.devices.rtc.restore(back('rtc', this.devices.rtc.state()) as RtcState);
    } finally {
      this.vcpus.resume();
    }
  }

  /** The KVM fd of vCPU `index` (for benchmarks and state capture; the vCPU threads own KVM_RUN). */
  vcpuFd(index: number): number {
    const fd = this.vcpuFds[index];
    if (fd === undefined) throw new RangeError(`no vCPU ${index}: the VM has ${this.vcpuFds.length}`);
    return fd;
  }

  static create(config: VmConfig): Vm {
    if (!Number.isInteger(config.cpus) || config.cpus < 1 || config.cpus > MAX_CPUS) {
      throw new VmConfigError(`cannot give the VM ${config.cpus} vCPUs: choose 1 to ${MAX_CPUS}`);
    }
    if (config.memBytes < MIN_MEM_BYTES) {
      throw new VmConfigError(`guest memory of ${config.memBytes} bytes is too small: give at least ${MIN_MEM_BYTES / MiB} MiB`);
    }
    const plan = config.plan ?? planBoot(config);

    const native = addon();
    const kvm = Kvm.open(config.kvmPath);
    const opened: number[] = [];
    let memory: GuestMemory | undefined;
    let virtio: VirtioDevices | undefined;
    try {
      const vmFd = retryOnEintr(() => native.kvmCreateVm(kvm.fd, 0));
      opened.push(vmFd);
      native.kvmSetTssAddr(vmFd, KVM_TSS_ADDR);
      native.kvmSetIdentityMapAddr(vmFd, BigInt(KVM_IDENTITY_MAP_ADDR));
      // The in-kernel PIC/IOAPIC/LAPIC and PIT must exist before any vCPU is created.
      native.kvmCreateIrqchip(vmFd);
      native.kvmCreatePit2(vmFd, KVM_PIT_SPEAKER_DUMMY);

      // With manual protection, KVM_GET_DIRTY_LOG only reads and we clear (re-protect) exactly the
      // pages we took: cheaper, and a sync can never lose a bit between fetch and clear.
      const manualProtect = (config.manualDirtyLogProtect ?? true) && native.kvmCheckExtension(vmFd, Cap.MANUAL_DIRTY_LOG_PROTECT2) > 0;
      if (manualProtect) native.kvmEnableCap(vmFd, Cap.MANUAL_DIRTY_LOG_PROTECT2, 0, new BigUint64Array([1n, 0n, 0n, 0n]));

      tracePhase('VM: KVM VM and irqchip created');
      memory = GuestMemory.create(config.memBytes, config.testOnly ?? {}, { hugePages: config.hugePages ?? true, preallocate: config.preallocateMemory ?? false });
      // Before anything writes RAM: see VmConfig.incoming. Where marking is switched off for a test
      // (invariant B off), the marks do not say what was written, and nothing relies on them.
      const marksWrites = config.incoming === true && config.testOnly?.testOnlySkipVmmDirtyMarking !== true;
      if (marksWrites && config.testOnly?.unmarkedLoader !== true) memory.setLogging(true);
      tracePhase('VM: guest memory mapped');
      const supported = kvm.supportedCpuid();
      const vcpuFds: number[] = [];
      for (let i = 0; i < config.cpus; i++) {
        const fd = native.kvmCreateVcpu(vmFd, i);
        opened.push(fd);
        vcpuFds.push(fd);
        native.kvmSetCpuid2(fd, encodeCpuid2(cpuidForVcpu(supported, i, config.cpus)));
        if (plan.kind === 'linux') coldBootVcpu(native, fd);
      }
      // The BSP enters the kernel; APs wait for INIT/SIPI in the in-kernel LAPIC, as on hardware.
      const sregsBuf = new Uint8Array(KVM_SREGS_SIZE);
      native.kvmGetSregs(vcpuFds[0]!, sregsBuf);
      const boot = plan.kind === 'multiboot'
        ? multibootEntryState(loadMultiboot(plan.kernel, memory, plan.cmdline), decodeSregs(sregsBuf))
        : linuxEntryState(loadLinux(plan.kernel, memory, { cmdline: plan.cmdline, initrd: plan.initrd, cpus: config.cpus, ramIsZero: true }), decodeSregs(sregsBuf));
      native.kvmSetSregs(vcpuFds[0]!, encodeSregs(boot.sregs));
      native.kvmSetRegs(vcpuFds[0]!, encodeRegs(boot.regs));
      tracePhase('VM: vCPUs created, kernel loaded');
      if (marksWrites && config.testOnly?.unmarkedLoader === true) memory.setLogging(true);

      virtio = VirtioDevices.create(vmFd, memory, config.virtio ?? []);
      const board = newBoard(vmFd, config.serialOutputFd, virtio.slots);
      const uart = comPortUart(board, fdTransmitter(config.serialOutputFd));
      const runMmapSize = kvm.vcpuMmapSize();
      const msrIndices = msrIndexList(native, kvm.fd);
      const vcpus = new VcpuThreads(vcpuFds, runMmapSize, board, config.prestartedVcpuThread, msrIndices);
      const memslots = new MemslotMap(native, vmFd, memory, vcpus, {
        maxSlots: Math.max(32, kvm.checkExtension(Cap.NR_MEMSLOTS)),
        manualProtect,
        testOnlySkipSyncBeforeDelete: config.testOnly?.skipSyncBeforeDelete,
      });
      // INVARIANT: the RAM mappings outlive every slot; dispose() unmaps only after closing the VM.
      memslots.mapAllRam();
      // The main thread's views of the shared device state, for capture and restore (never for I/O:
      // a reset pulsed here would have no vCPU to stop).
      const devices = { uart, i8042: keyboardController(board, () => {}), rtc: cmosRtc(board) };
      const vm = new Vm(kvm, vmFd, memory, vcpuFds, vcpus, devices, board, runMmapSize, memslots, new DirtyTracker(memory, memslots), msrIndices, virtio);
      vm.marksUntilRun = marksWrites;
      return vm;
    } catch (e) {
      void virtio?.close();
      for (const fd of opened.reverse()) native.close(fd);
      memory?.dispose();
      kvm.close();
      throw e;
    }
  }

  /** The vCPU threads were started parked (startParked) and start() has not let them go yet. */
  private parkedAtStart = false;

  /** Made with `incoming`: every VMM write to RAM has been marked since creation, and the guest has not run. */
  private marksUntilRun = false;

  /**
   * Whether all of guest RAM is zero but for the pages marked written: a VM made with `incoming`
   * (VmConfig) whose guest has not run yet. RAM was zero when it was allocated, the VMM has marked
   * every write since (invariant B), and nothing has taken the marks: the dirty tracking that takes
   * them (DirtyTracker) runs only on a VM migrating out, which one still waiting for its guest is not.
   */
  get ramZeroUnlessMarked(): boolean {
    return this.marksUntilRun && this.memory.isLogging;
  }

  start(): void {
    if (this.marksUntilRun) {
      // The guest runs from here: its writes go unmarked. And nothing needs the VMM's marks any more.
      this.marksUntilRun = false;
      this.memory.setLogging(false);
    }
    this.virtio.start();
    if (!this.parkedAtStart) {
      // Reading state has no effect on a vCPU that has not run (nor pending INIT or SIPI to complete).
      if (!this.vcpus.isStarted) this.bootVcpuStates = this.vcpuStates();
      this.vcpus.start();
      return;
    }
    this.parkedAtStart = false;
    this.vcpus.resume();
    // An incoming VM's: the threads standing by get the CPU before this thread goes on, as its next
    // work can wait and the guest's cannot.
    this.vcpus.handOver(VCPU_HAND_OVER_MS);
  }

  /**
   * Starts the vCPU threads parked, before the guest may run, with the devices still stopped; start()
   * lets them go. An incoming VM does this while the stream arrives: a thread's start (its isolate,
   * its module, its buses, the first turn of its run loop) took ~120 ms in nested KVM, and after the
   * last byte arrives that is downtime the guest sees. Parked threads are not in KVM_RUN, so state can
   * be restored into their vCPUs meanwhile, as it is captured from paused ones.
   */
  startParked(): void {
    if (this.vcpus.isStarted) throw new Error('vCPUs already started');
    this.parkedAtStart = true;
    void this.vcpus.pause(); // not started yet: only counts, so start() below posts PAUSE to every thread
    this.vcpus.start();
  }

  /** Resolves when the guest stops (debug-exit, power-off, reset, triple fault, error) or stop() is called. */
  get stopped(): Promise<VcpuStop | undefined> {
    return this.vcpus.stopped;
  }

  /**
   * Parks every vCPU, then stops the devices popping requests and waits for those in flight: once this
   * resolves nothing writes guest memory or device state, so a migration's final capture is complete
   * and each request completes exactly once, here (those still in the avail ring go with the guest).
   * With `captureState`, each vCPU thread also reads its vCPU's state once parked, for the
   * captureState() that follows (a migration's switch-over): the thread is awake then, and this one
   * has the rest of the stop to do meanwhile.
   */
  async pause(options: { readonly captureState?: boolean } = {}): Promise<void> {
    this.pauseDepth++;
    await this.vcpus.pause(options);
    await this.virtio.quiesce();
  }

  /** The parked vCPU threads wait awake for the next request, for a few ms (VcpuThreads.standBy). */
  standBy(): void {
    this.vcpus.standBy();
  }

  resume(): void {
    if (this.pauseDepth > 0 && --this.pauseDepth === 0) this.virtio.resume();
    this.vcpus.resume();
  }

  stop(): Promise<VcpuStop | undefined> {
    this.vcpus.setThrottle(0);
    return this.vcpus.stop();
  }

  /** Auto-converge: the vCPUs sleep `percent` (0 to 99) of their time; devices run on. 0 ends it. */
  throttle(percent: number): void {
    this.vcpus.setThrottle(percent);
  }

  /** Feeds bytes to the serial port's receiver, as typed on the console; returns how many fitted. */
  serialInput(bytes: Uint8Array): number {
    return this.devices.uart.receive(bytes);
  }

  /** Closes the devices' backends and their notification thread. Call after stop(), before dispose(). */
  closeDevices(): Promise<void> {
    return this.virtio.close();
  }

  /** Closes every vCPU and the VM, then unmaps guest memory (in that order: slots before mappings). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const native = addon();
    this.vcpus.dispose();
    for (const fd of this.vcpuFds) native.close(fd);
    native.close(this.vmFd);
    this.memory.dispose();
    this.kvm.close();
  }
}

/**
 * Runs a system call again when a signal interrupted it (EINTR): KVM_CREATE_VM can take long enough
 * for a profiler's or the inspector's signal to land in it.
 */
function retryOnEintr<T>(call: () => T): T {
  for (;;) {
    try {
      return call();
    } catch (e) {
      if ((e as { code?: string }).code !== 'EINTR') throw e;
    }
  }
}
