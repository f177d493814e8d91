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

/**
 * The Linux 64-bit boot protocol's fixed places (Documentation/arch/x86/boot.rst, "64-bit Boot
 * Protocol"), at the addresses Firecracker uses (src/vmm/src/arch/x86_64/layout.rs): all below the EBDA,
 * in RAM the e820 map reports as usable, which the kernel reclaims once it has copied what it needs.
 */
/** IDT placeholder (one zero descriptor) right after the five-entry Linux boot GDT at BOOT_GDT_ADDR. */
export const BOOT_IDT_ADDR = gpa(0x530);
/** boot_params, "the zero page": RSI points here at the 64-bit entry. */
export const ZERO_PAGE_ADDR = gpa(0x7000);
/** Initial stack pointer at the 64-bit entry (grows down below the page tables). */
export const BOOT_STACK_POINTER = gpa(0x8ff0);
/** Identity-mapping page tables: one PML4 page, then one PDPT page, then PD pages (2 MiB pages). */
export const BOOT_PML4_ADDR = gpa(0x9000);
export const BOOT_PDPT_ADDR = gpa(0xa000);
export const BOOT_PD_ADDR = gpa(0xb000);
/** How much the boot page tables identity-map: all of the 32-bit space (four PD pages). */
export const BOOT_IDENTITY_MAP_BYTES = 4 * 1024 * 1024 * 1024;
/** The kernel command line (cmd_line_ptr); room up to LINUX_CMDLINE_MAX bytes including the NUL. */
export const LINUX_CMDLINE_ADDR = gpa(0x20000);
/** Room for the command line; the kernel's own cmdline_size limit applies first when it is smaller. */
export const LINUX_CMDLINE_MAX = 0x10000;
/**
 * The MP floating pointer and configuration table: at the start of the BIOS area, which Linux's
 * find_smp_config scans (0xF0000-0xFFFFF) and e820 reports reserved. Firecracker uses the EBDA, whose
 * 1 KiB holds ~37 CPUs; the BIOS area's 64 KiB holds MAX_CPUS.
 */
export const MPTABLE_ADDR = gpa(0xf0000);

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
/** Bytes per virtio-mmio transport (hw/i386/microvm.c: `VIRTIO_MMIO_BASE + i * 512`). */
export const VIRTIO_MMIO_SLOT_SIZE = 512;
/**
 * Transports microvm creates with one IOAPIC (hw/i386/microvm.c microvm_devices_init:
 * `virtio_num_transports = 8`). QEMU 7.2's default (ACPI on, ioapic2=auto) adds a second, userspace
 * IOAPIC and 24 transports on GSIs 24..47; KVM's in-kernel irqchip, which tsvmm uses, has one IOAPIC
 * of 24 pins, so tsvmm's board is `-M microvm,ioapic2=off`: 8 transports on GSIs 16..23.
 */
export const VIRTIO_MMIO_SLOTS = 8;
/** GSI of transport 0 with ACPI on and one IOAPIC (microvm.c: `virtio_irq_base = 16`); slot i is base + i. */
export const VIRTIO_MMIO_GSI_BASE = 16;
/**
 * The slot the n-th virtio device (in command-line order) lands in: QEMU creates the transports in
 * increasing address order and qbus_realize prepends each new bus, so `-device` fills the highest
 * slot first (`info qtree` under QEMU 7.2 shows the first device on virtio-mmio-bus.<last>).
 */
export function virtioMmioSlot(deviceIndex: number): number {
  return VIRTIO_MMIO_SLOTS - 1 - deviceIndex;
}
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
/** i8042 keyboard controller: data port 0x60 and command/status port 0x64 (its reset line is what matters). */
export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
/** The i8042's two ports are 4 apart: one window of five; 0x61 (KVM's in-kernel speaker port) never exits to us. */
export const I8042_WINDOW_SIZE = 5;
/** The keyboard's ISA interrupt. */
export const I8042_IRQ = 1;
/** MC146818 CMOS RTC: index port 0x70, data port 0x71. */
export const RTC_PORT = 0x70;
export const RTC_PORT_COUNT = 2;
