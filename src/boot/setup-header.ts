import { BootError } from './boot-error.js';

/**
 * The bzImage setup header ("struct setup_header"), byte offsets as in the file and in boot_params,
 * from Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header" (offsets are from the start of
 * the image, which is also the start of boot_params: the header is copied to the same offsets).
 */
export const Hdr = {
  /** 0x1F1/1 setup_sects: size of the setup code in 512-byte sectors (0 means 4). */
  SETUP_SECTS: 0x1f1,
  /** 0x1FA/2 vid_mode (write, obligatory): 0xFFFF = "normal". */
  VID_MODE: 0x1fa,
  /** 0x1FE/2 boot_flag: 0xAA55. */
  BOOT_FLAG: 0x1fe,
  /** 0x200/2 jump: 0xEB and a signed offset from 0x202; 0x202 + offset is the header's end. */
  JUMP: 0x200,
  /** 0x202/4 header: "HdrS". */
  HEADER: 0x202,
  /** 0x206/2 version: boot protocol, (major << 8) + minor. */
  VERSION: 0x206,
  /** 0x210/1 type_of_loader (write, obligatory). */
  TYPE_OF_LOADER: 0x210,
  /** 0x211/1 loadflags (modify, obligatory). */
  LOADFLAGS: 0x211,
  /** 0x214/4 code32_start: where the protected-mode kernel is loaded (reloc). */
  CODE32_START: 0x214,
  /** 0x218/4 ramdisk_image, 0x21C/4 ramdisk_size (write, obligatory). */
  RAMDISK_IMAGE: 0x218,
  RAMDISK_SIZE: 0x21c,
  /** 0x224/2 heap_end_ptr (write, obligatory). */
  HEAP_END_PTR: 0x224,
  /** 0x228/4 cmd_line_ptr (write, obligatory). */
  CMD_LINE_PTR: 0x228,
  /** 0x22C/4 initrd_addr_max (2.03+): highest byte an initrd may occupy. */
  INITRD_ADDR_MAX: 0x22c,
  /** 0x230/4 kernel_alignment (2.05+). */
  KERNEL_ALIGNMENT: 0x230,
  /** 0x234/1 relocatable_kernel (2.05+). */
  RELOCATABLE_KERNEL: 0x234,
  /** 0x236/2 xloadflags (2.12+). */
  XLOADFLAGS: 0x236,
  /** 0x238/4 cmdline_size (2.06+): maximum command line length, excluding the NUL. */
  CMDLINE_SIZE: 0x238,
  /** 0x248/4 payload_offset (2.08+): the compressed kernel, from the start of the protected-mode code. */
  PAYLOAD_OFFSET: 0x248,
  /** 0x24C/4 payload_length (2.08+). */
  PAYLOAD_LENGTH: 0x24c,
  /** 0x258/8 pref_address (2.10+): preferred load address of a relocatable kernel. */
  PREF_ADDRESS: 0x258,
  /** 0x260/4 init_size (2.10+): bytes from the load address the kernel needs while it starts. */
  INIT_SIZE: 0x260,
} as const;

export const HDRS_MAGIC = 0x5372_6448; // "HdrS", little-endian
export const BOOT_FLAG_MAGIC = 0xaa55;
/** 2.06 is the oldest protocol with cmdline_size; the 64-bit entry needs 2.12's xloadflags. */
export const MIN_PROTOCOL = 0x0206;
/** loadflags bit 0: the protected-mode code is loaded at 0x100000 (a bzImage). */
export const LOADFLAGS_LOADED_HIGH = 1 << 0;
/** loadflags bit 7: heap_end_ptr is valid. */
export const LOADFLAGS_CAN_USE_HEAP = 1 << 7;
/** xloadflags bit 0: the kernel has the legacy 64-bit entry point at the load address + 0x200. */
export const XLF_KERNEL_64 = 1 << 0;
/** type_of_loader 0xFF: "undefined" loader (boot.rst: for loaders without an assigned id). */
export const TYPE_OF_LOADER_UNDEFINED = 0xff;
/** The 64-bit entry lies this far past the start of the protected-mode kernel (boot.rst, 64-bit protocol). */
export const STARTUP_64_OFFSET = 0x200;
/** Before 2.03 there was no initrd_addr_max field and this was the limit. */
const DEFAULT_INITRD_ADDR_MAX = 0x37ff_ffff;

/** A bzImage's setup header, read from the file's first bytes (enough for SETUP_HEADER_MAX_END). */
export interface SetupHeader {
  readonly protocol: number;
  /** Setup sectors after the boot sector (0 already replaced by 4). */
  readonly setupSects: number;
  readonly loadflags: number;
  readonly xloadflags: number;
  readonly relocatable: boolean;
  readonly kernelAlignment: number;
  /** Highest byte address an initrd may occupy. */
  readonly initrdAddrMax: number;
  /** Longest command line, excluding its NUL. */
  readonly cmdlineSize: number;
  readonly prefAddress: number;
  readonly initSize: number;
  /** The header bytes (0x1F1 up to the end the jump at 0x200 gives), copied into boot_params as is. */
  readonly raw: Uint8Array;
  /** Where the protected-mode kernel starts in the file: after the boot sector and the setup sectors. */
  readonly kernelStart: number;
  /**
   * Where the compressed vmlinux lies in the file (payload_offset, from kernelStart, and payload_length:
   * 2.08+); undefined before 2.08, or when the range lies outside the file, which only the guest's
   * decompressor would then notice.
   */
  readonly payloadRange?: { readonly offset: number; readonly length: number };
}

/** A whole bzImage: its setup header and the bytes after it. */
export interface BzImageHeader extends SetupHeader {
  /** The protected-mode kernel: everything after the setup sectors. */
  readonly kernel: Uint8Array;
  /** The compressed vmlinux the decompressor in `kernel` unpacks, at `payloadRange`. */
  readonly payload?: Uint8Array;
}

/** Where the setup header starts and the most boot_params has room for (the zero page ends at 0x1000). */
export const SETUP_HEADER_START = Hdr.SETUP_SECTS;
const SETUP_HEADER_MAX_END = 0x290;

export function isBzImage(image: Uint8Array): boolean {
  return image.length >= Hdr.HEADER + 4 && new DataView(image.buffer, image.byteOffset).getUint32(Hdr.HEADER, true) === HDRS_MAGIC;
}

/**
 * Reads and validates a bzImage's setup header for the 64-bit boot protocol: "HdrS", protocol 2.06 or
 * newer, loaded high, the 64-bit entry present (XLF_KERNEL_64) and the image long enough for the
 * sectors it declares. Every refusal says what is wrong and what to use instead.
 */
export function parseBzImage(image: Uint8Array): BzImageHeader {
  const header = parseSetupHeader(image, image.length);
  const { payloadRange } = header;
  return {
    ...header,
    kernel: image.subarray(header.kernelStart),
    payload: payloadRange && image.subarray(payloadRange.offset, payloadRange.offset + payloadRange.length),
  };
}

/**
 * parseBzImage's checks and header from the first bytes of a bzImage of `fileSize` bytes (`head`
 * must reach past the header, SETUP_HEADER_MAX_END): for a boot that does not need the rest of the file.
 */
export function parseSetupHeader(head: Uint8Array, fileSize: number): SetupHeader {
  if (!isBzImage(head)) throw new BootError('not a bzImage: no "HdrS" signature at offset 0x202');
  const image = head;
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const protocol = v.getUint16(Hdr.VERSION, true);
  const version = `${protocol >> 8}.${(protocol & 0xff).toString().padStart(2, '0')}`;
  if (protocol < MIN_PROTOCOL) {
    throw new BootError(`boot protocol ${version} is too old: tsvmm needs 2.06 or newer (Linux 2.6.22+); use a newer kernel`);
  }
  if (v.getUint16(Hdr.BOOT_FLAG, true) !== BOOT_FLAG_MAGIC) throw new BootError('bzImage boot_flag at 0x1FE is not 0xAA55: the file is damaged');
  const loadflags = v.getUint8(Hdr.LOADFLAGS);
  if (!(loadflags & LOADFLAGS_LOADED_HIGH)) throw new BootError('this is a zImage (loaded low), not a bzImage: build the kernel with `make bzImage`');
  const xloadflags = protocol >= 0x020c ? v.getUint16(Hdr.XLOADFLAGS, true) : 0;
  if (!(xloadflags & XLF_KERNEL_64)) {
    throw new BootError(`boot protocol ${version} kernel has no 64-bit entry point (XLF_KERNEL_64): tsvmm boots x86-64 kernels only`);
  }
  const setupSects = v.getUint8(Hdr.SETUP_SECTS) || 4;
  const kernelStart = (setupSects + 1) * 512;
  if (kernelStart >= fileSize) {
    throw new BootError(`bzImage is truncated: its ${setupSects} setup sectors reach past the end of the ${fileSize}-byte file`);
  }
  const headerEnd = Math.min(SETUP_HEADER_MAX_END, Hdr.HEADER + v.getInt8(Hdr.JUMP + 1));
  const relocatable = v.getUint8(Hdr.RELOCATABLE_KERNEL) !== 0;
  const payloadOffset = protocol >= 0x0208 ? v.getUint32(Hdr.PAYLOAD_OFFSET, true) : 0;
  const payloadLength = protocol >= 0x0208 ? v.getUint32(Hdr.PAYLOAD_LENGTH, true) : 0;
  const payloadRange = payloadLength > 0 && kernelStart + payloadOffset + payloadLength <= fileSize
    ? { offset: kernelStart + payloadOffset, length: payloadLength } : undefined;
  return {
    protocol,
    setupSects,
    loadflags,
    xloadflags,
    relocatable,
    kernelAlignment: v.getUint32(Hdr.KERNEL_ALIGNMENT, true),
    initrdAddrMax: protocol >= 0x0203 ? v.getUint32(Hdr.INITRD_ADDR_MAX, true) : DEFAULT_INITRD_ADDR_MAX,
    cmdlineSize: v.getUint32(Hdr.CMDLINE_SIZE, true),
    prefAddress: protocol >= 0x020a ? Number(v.getBigUint64(Hdr.PREF_ADDRESS, true)) : 0x100000,
    initSize: protocol >= 0x020a ? v.getUint32(Hdr.INIT_SIZE, true) : 0,
    raw: image.subarray(SETUP_HEADER_START, Math.max(headerEnd, Hdr.INIT_SIZE + 4)),
    kernelStart,
    payloadRange,
  };
}
