import { IOAPIC_ADDR, LAPIC_ADDR, type Gpa } from './layout.js';

/**
 * An Intel MultiProcessor Specification 1.4 table (floating pointer + configuration table), built the
 * way Firecracker's arch/x86_64/mptable.rs builds it, with Linux's struct layouts
 * (arch/x86/include/asm/mpspec_def.h): one processor entry per vCPU, an ISA bus, the IOAPIC, every
 * IOAPIC pin routed 1:1 from the ISA IRQ of the same number, and LINT0 = ExtINT, LINT1 = NMI.
 * Linux finds it by scanning the BIOS area (find_smp_config) and then starts every listed CPU.
 *
 * No ACPI tables (RSDP/XSDT/MADT) are built: without an RSDP Linux falls back to this table for the
 * CPUs and the IOAPIC (as Firecracker guests did before Firecracker 1.5 added ACPI), and nothing else
 * in this board needs ACPI — the console, the RTC and the i8042 are ISA devices at fixed ports, and
 * `reboot` falls back to the i8042 reset line. What ACPI would add is power-off through the GED
 * (microvm's sleep register, which our multiboot guests use directly); until then a Linux `poweroff`
 * halts. Linux logs "A valid RSDP was not found" once at boot; `acpi=off` silences it.
 */

const MPF_SIZE = 16;
const MPC_HEADER_SIZE = 44;
const MPC_CPU_SIZE = 20;
const MPC_SMALL_ENTRY_SIZE = 8;
/** Entry types. */
const MP_PROCESSOR = 0;
const MP_BUS = 1;
const MP_IOAPIC = 2;
const MP_INTSRC = 3;
const MP_LINTSRC = 4;
/** Interrupt types (mp_irq_source_types). */
const MP_INT = 0;
const MP_NMI = 1;
const MP_EXTINT = 3;
/** Spec revision 1.4. */
const MPC_SPEC = 4;
/** Local APIC version of an integrated (xAPIC) APIC, and the IOAPIC's (KVM's reports 0x11). */
const APIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const CPU_ENABLED = 1;
const CPU_BOOTPROCESSOR = 2;
/** Family 6 stepping signature and the FPU + APIC feature flags, as Firecracker reports. */
const CPU_STEPPING = 0x600;
const CPU_FEATURE_APIC = 0x200;
const CPU_FEATURE_FPU = 0x001;
const MPC_APIC_USABLE = 1;
/** IOAPIC pins: KVM's in-kernel IOAPIC has 24. */
export const IOAPIC_PINS = 24;
const ISA_BUS_ID = 0;
/** Conforming polarity and trigger (MP_IRQPOL_DEFAULT | MP_IRQTRIG_DEFAULT). */
const IRQ_FLAG_DEFAULT = 0;

/** Bytes the table takes for `cpus` vCPUs (so the caller can check it fits where it goes). */
export function mptableSize(cpus: number): number {
  return MPF_SIZE + MPC_HEADER_SIZE + cpus * MPC_CPU_SIZE + MPC_SMALL_ENTRY_SIZE * (2 + IOAPIC_PINS + 2);
}

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (0x100 - sum) & 0xff;
}

function ascii(bytes: Uint8Array, at: number, text: string, width: number): void {
  for (let i = 0; i < width; i++) bytes[at + i] = i < text.length ? text.charCodeAt(i) : 0x20;
}

/** The MP table for `cpus` vCPUs (APIC IDs 0..cpus-1, the BSP first) placed at `address`. */
export function buildMptable(address: Gpa, cpus: number): Uint8Array {
  if (cpus < 1 || cpus > 254) throw new RangeError(`an MP table describes 1 to 254 CPUs, not ${cpus}`);
  const ioapicId = cpus; // the first APIC ID no CPU uses
  const bytes = new Uint8Array(mptableSize(cpus));
  const v = new DataView(bytes.buffer);
  const table = MPF_SIZE; // the configuration table right after the floating pointer
  let at = table + MPC_HEADER_SIZE;
  let entries = 0;

  for (let id = 0; id < cpus; id++, entries++, at += MPC_CPU_SIZE) {
    v.setUint8(at, MP_PROCESSOR);
    v.setUint8(at + 1, id);
    v.setUint8(at + 2, APIC_VERSION);
    v.setUint8(at + 3, CPU_ENABLED | (id === 0 ? CPU_BOOTPROCESSOR : 0));
    v.setUint32(at + 4, CPU_STEPPING, true);
    v.setUint32(at + 8, CPU_FEATURE_APIC | CPU_FEATURE_FPU, true);
  }
  v.setUint8(at, MP_BUS);
  v.setUint8(at + 1, ISA_BUS_ID);
  ascii(bytes, at + 2, 'ISA', 6);
  at += MPC_SMALL_ENTRY_SIZE; entries++;
  v.setUint8(at, MP_IOAPIC);
  v.setUint8(at + 1, ioapicId);
  v.setUint8(at + 2, IOAPIC_VERSION);
  v.setUint8(at + 3, MPC_APIC_USABLE);
  v.setUint32(at + 4, IOAPIC_ADDR, true);
  at += MPC_SMALL_ENTRY_SIZE; entries++;
  for (let irq = 0; irq < IOAPIC_PINS; irq++, entries++, at += MPC_SMALL_ENTRY_SIZE) {
    v.setUint8(at, MP_INTSRC);
    v.setUint8(at + 1, MP_INT);
    v.setUint16(at + 2, IRQ_FLAG_DEFAULT, true);
    v.setUint8(at + 4, ISA_BUS_ID);
    v.setUint8(at + 5, irq);
    v.setUint8(at + 6, ioapicId);
    v.setUint8(at + 7, irq);
  }
  // LINT0 of every LAPIC takes the PIC's ExtINT; LINT1 of every LAPIC (0xFF) takes NMI.
  for (const [type, apic, lint] of [[MP_EXTINT, 0, 0], [MP_NMI, 0xff, 1]] as const) {
    v.setUint8(at, MP_LINTSRC);
    v.setUint8(at + 1, type);
    v.setUint16(at + 2, IRQ_FLAG_DEFAULT, true);
    v.setUint8(at + 4, ISA_BUS_ID);
    v.setUint8(at + 5, 0);
    v.setUint8(at + 6, apic);
    v.setUint8(at + 7, lint);
    at += MPC_SMALL_ENTRY_SIZE; entries++;
  }

  // struct mpc_table
  ascii(bytes, table, 'PCMP', 4);
  v.setUint16(table + 4, at - table, true);
  v.setUint8(table + 6, MPC_SPEC);
  ascii(bytes, table + 8, 'TSVMM', 8);
  ascii(bytes, table + 16, '000000000000', 12);
  v.setUint16(table + 34, entries, true);
  v.setUint32(table + 36, LAPIC_ADDR, true);
  v.setUint8(table + 7, checksum(bytes.subarray(table, at)));

  // struct mpf_intel: "_MP_", physptr, length in 16-byte units, spec, checksum, feature bytes 0.
  ascii(bytes, 0, '_MP_', 4);
  v.setUint32(4, address + table, true);
  v.setUint8(8, 1);
  v.setUint8(9, MPC_SPEC);
  v.setUint8(10, checksum(bytes.subarray(0, MPF_SIZE)));
  return bytes;
}
