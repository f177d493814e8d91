/**
 * Every fixed guest-physical address and I/O port of the tsvmm x86 machine, one doc line each.
 * The device addresses are those of QEMU's `-M microvm` (hw/i386/microvm.c, include/hw/i386/microvm.h),
 * so one guest binary runs unchanged on both.
 */

/** Guest-physical address, in bytes. A distinct type so it cannot be mixed up with a region offset. */
export type Gpa = number & { readonly __brand: 'Gpa' };
export const gpa = (address: number): Gpa => address as Gpa;

export const PAGE_SIZE = 4096;
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** End of conventional memory: RAM below it, the EBDA from here to 640 KiB (reported reserved). */
export const LOW_MEMORY_END = gpa(0x9fc00);
/** Start of the legacy VGA/BIOS hole; RAM resumes at HIGH_MEMORY_START. */
export const LEGACY_HOLE_START = gpa(0xa0000);
/** The BIOS area, reported reserved in the memory map as PCs do. */
export const BIOS_AREA_START = gpa(0xf0000);
/** 1 MiB: where "upper memory" (multiboot mem_upper) begins and where kernels load. */
export const HIGH_MEMORY_START = gpa(0x100000);

/** Boot GDT written by the loader (three descriptors: null, code, data), as Firecracker places it. */
export const BOOT_GDT_ADDR = gpa(0x500);
/** Multiboot information structure handed to the guest in EBX. */
export const MULTIBOOT_INFO_ADDR = gpa(0x9000);
/** Multiboot memory map entries (mmap_addr), right after the info structure. */
export const MULTIBOOT_MMAP_ADDR = gpa(0x9100);
/** The NUL-terminated kernel command line (cmdline). */
export const MULTIBOOT_CMDLINE_ADDR = gpa(0x9800);
/** Bytes available for the command line including its NUL, up to the end of that page. */
export const MULTIBOOT_CMDLINE_MAX = 0xa000 - 0x9800;
/** Bootloader name string (boot_loader_name). */
export const MULTIBOOT_LOADER_NAME_ADDR = gpa(0x9700);

/** RAM below 4 GiB ends here at most; the rest of RAM is mapped from 4 GiB up. */
export const LOW_RAM_MAX_END = gpa(0xc000_0000);
/** Start of RAM above the MMIO hole. */
export const HIGH_RAM_START = gpa(0x1_0000_0000);

/** The three pages KVM_SET_TSS_ADDR needs for real-mode emulation on Intel, below the IOAPIC. */
export const KVM_TSS_ADDR = 0xfffb_d000;
/** The page KVM_SET_IDENTITY_MAP_ADDR needs, just below the TSS. */
export const KVM_IDENTITY_MAP_ADDR = 0xfffb_c000;

/** microvm's ACPI Generic Event Device (GED_MMIO_BASE). */
export const GED_MMIO_BASE = gpa(0xfea0_0000);
/** GED_MMIO_BASE_REGS: the sleep control / sleep status / reset registers. */
export const GED_REGS_ADDR = gpa(0xfea0_0200);
/** Three byte-wide registers at GED_REGS_ADDR. */
export const GED_REGS_SIZE = 3;
/** microvm's virtio-mmio window (VIRTIO_MMIO_BASE); slots of 512 bytes. */
export const VIRTIO_MMIO_BASE = gpa(0xfeb0_0000);
/** In-kernel IOAPIC (KVM places it here). */
export const IOAPIC_ADDR = gpa(0xfec0_0000);
/** Local APIC (the architectural default). */
export const LAPIC_ADDR = gpa(0xfee0_0000);

/** COM1: an 8250/16550 UART, eight ports. */
export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;
/** isa-debug-exit,iobase=0xf4,iosize=4: a write of V ends the VM with status (V << 1) | 1. */
export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_SIZE = 4;
