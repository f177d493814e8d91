/**
 * Struct layouts of <linux/kvm.h> for x86-64, decoded with DataView over caller-owned buffers so that
 * the hot path allocates nothing. Offsets are the kernel's; sizes are checked by the addon with
 * static_assert against sizeof.
 */

export const KVM_REGS_SIZE = 144;
export const KVM_SREGS_SIZE = 312;
export const KVM_FPU_SIZE = 416;
export const KVM_LAPIC_SIZE = 1024;
export const KVM_XSAVE_SIZE = 4096;
export const KVM_XCRS_SIZE = 392;
export const KVM_VCPU_EVENTS_SIZE = 64;
export const KVM_MP_STATE_SIZE = 4;
export const KVM_DEBUGREGS_SIZE = 128;
export const KVM_CLOCK_DATA_SIZE = 48;
export const KVM_IRQCHIP_SIZE = 520;
export const KVM_PIT_STATE2_SIZE = 112;

/** struct kvm_regs: sixteen general registers, then rip and rflags, each a u64, in this order. */
export const GENERAL_REGISTERS = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const;
export type GeneralRegister = (typeof GENERAL_REGISTERS)[number];
export type Regs = Record<GeneralRegister, bigint>;

export function decodeRegs(buf: Uint8Array): Regs {
  const view = new DataView(buf.buffer, buf.byteOffset, KVM_REGS_SIZE);
  const regs = {} as Regs;
  GENERAL_REGISTERS.forEach((name, i) => { regs[name] = view.getBigUint64(i * 8, true); });
  return regs;
}

export function encodeRegs(regs: Regs, buf: Uint8Array = new Uint8Array(KVM_REGS_SIZE)): Uint8Array {
  const view = new DataView(buf.buffer, buf.byteOffset, KVM_REGS_SIZE);
  GENERAL_REGISTERS.forEach((name, i) => view.setBigUint64(i * 8, regs[name], true));
  return buf;
}

/** struct kvm_segment (24 bytes). */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** struct kvm_dtable (16 bytes): a GDTR or IDTR. */
export interface DescriptorTable {
  base: bigint;
  limit: number;
}

/** struct kvm_sregs (312 bytes). */
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DescriptorTable; idt: DescriptorTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apicBase: bigint;
  /** Pending external interrupt bitmap (256 bits); kept opaque. */
  interruptBitmap: [bigint, bigint, bigint, bigint];
}

const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SEGMENT_SIZE = 24;
const GDT_OFFSET = 192;
const IDT_OFFSET = 208;
const CONTROL_OFFSET = 224;
const CONTROL_NAMES = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
const INTERRUPT_BITMAP_OFFSET = 280;

function decodeSegment(view: DataView, at: number): Segment {
  return {
    base: view.getBigUint64(at, true),
    limit: view.getUint32(at + 8, true),
    selector: view.getUint16(at + 12, true),
    type: view.getUint8(at + 14),
    present: view.getUint8(at + 15),
    dpl: view.getUint8(at + 16),
    db: view.getUint8(at + 17),
    s: view.getUint8(at + 18),
    l: view.getUint8(at + 19),
    g: view.getUint8(at + 20),
    avl: view.getUint8(at + 21),
    unusable: view.getUint8(at + 22),
  };
}

function encodeSegment(view: DataView, at: number, seg: Segment): void {
  view.setBigUint64(at, seg.base, true);
  view.setUint32(at + 8, seg.limit, true);
  view.setUint16(at + 12, seg.selector, true);
  view.setUint8(at + 14, seg.type);
  view.setUint8(at + 15, seg.present);
  view.setUint8(at + 16, seg.dpl);
  view.setUint8(at + 17, seg.db);
  view.setUint8(at + 18, seg.s);
  view.setUint8(at + 19, seg.l);
  view.setUint8(at + 20, seg.g);
  view.setUint8(at + 21, seg.avl);
  view.setUint8(at + 22, seg.unusable);
  view.setUint8(at + 23, 0);
}

export function decodeSregs(buf: Uint8Array): Sregs {
  const view = new DataView(buf.buffer, buf.byteOffset, KVM_SREGS_SIZE);
  const sregs = {} as Sregs;
  SEGMENT_NAMES.forEach((name, i) => { sregs[name] = decodeSegment(view, i * SEGMENT_SIZE); });
  sregs.gdt = { base: view.getBigUint64(GDT_OFFSET, true), limit: view.getUint16(GDT_OFFSET + 8, true) };
  sregs.idt = { base: view.getBigUint64(IDT_OFFSET, true), limit: view.getUint16(IDT_OFFSET + 8, true) };
  CONTROL_NAMES.forEach((name, i) => { sregs[name] = view.getBigUint64(CONTROL_OFFSET + i * 8, true); });
  sregs.interruptBitmap = [0, 1, 2, 3].map((i) => view.getBigUint64(INTERRUPT_BITMAP_OFFSET + i * 8, true)) as Sregs['interruptBitmap'];
  return sregs;
}

export function encodeSregs(sregs: Sregs, buf: Uint8Array = new Uint8Array(KVM_SREGS_SIZE)): Uint8Array {
  const view = new DataView(buf.buffer, buf.byteOffset, KVM_SREGS_SIZE);
  SEGMENT_NAMES.forEach((name, i) => encodeSegment(view, i * SEGMENT_SIZE, sregs[name]));
  for (const [at, table] of [[GDT_OFFSET, sregs.gdt], [IDT_OFFSET, sregs.idt]] as const) {
    view.setBigUint64(at, table.base, true);
    view.setUint16(at + 8, table.limit, true);
    view.setUint16(at + 10, 0, true);
    view.setUint32(at + 12, 0, true);
  }
  CONTROL_NAMES.forEach((name, i) => view.setBigUint64(CONTROL_OFFSET + i * 8, sregs[name], true));
  sregs.interruptBitmap.forEach((word, i) => view.setBigUint64(INTERRUPT_BITMAP_OFFSET + i * 8, word, true));
  return buf;
}

/** struct kvm_cpuid_entry2 (40 bytes) inside struct kvm_cpuid2 (8-byte header: nent, padding). */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export const CPUID2_HEADER_SIZE = 8;
export const CPUID_ENTRY_SIZE = 40;
/** kvm_cpuid_entry2.flags: the leaf has subleaves selected by ECX. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

export function cpuid2Buffer(capacity: number): Uint8Array {
  const buf = new Uint8Array(CPUID2_HEADER_SIZE + capacity * CPUID_ENTRY_SIZE);
  new DataView(buf.buffer).setUint32(0, capacity, true);
  return buf;
}

export function decodeCpuid2(buf: Uint8Array, count: number): CpuidEntry[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const entries: CpuidEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = CPUID2_HEADER_SIZE + i * CPUID_ENTRY_SIZE;
    entries.push({
      function: view.getUint32(at, true),
      index: view.getUint32(at + 4, true),
      flags: view.getUint32(at + 8, true),
      eax: view.getUint32(at + 12, true),
      ebx: view.getUint32(at + 16, true),
      ecx: view.getUint32(at + 20, true),
      edx: view.getUint32(at + 24, true),
    });
  }
  return entries;
}

export function encodeCpuid2(entries: readonly CpuidEntry[]): Uint8Array {
  const buf = cpuid2Buffer(entries.length);
  const view = new DataView(buf.buffer);
  entries.forEach((e, i) => {
    const at = CPUID2_HEADER_SIZE + i * CPUID_ENTRY_SIZE;
    view.setUint32(at, e.function, true);
    view.setUint32(at + 4, e.index, true);
    view.setUint32(at + 8, e.flags, true);
    view.setUint32(at + 12, e.eax, true);
    view.setUint32(at + 16, e.ebx, true);
    view.setUint32(at + 20, e.ecx, true);
    view.setUint32(at + 24, e.edx, true);
  });
  return buf;
}
