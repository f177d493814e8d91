import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

/** Synthetic Linux kernel images for the loader's tests: just enough header for each rule. */

/** A synthetic bzImage: boot sector + `setupSects` sectors of setup, then `payload` bytes of kernel. */
export function makeBzImage(o: {
  version?: number; xloadflags?: number; loadflags?: number; setupSects?: number; payload?: number; magic?: number;
  cmdlineSize?: number; initrdAddrMax?: number; prefAddress?: number; initSize?: number; relocatable?: number;
  /** A compressed kernel to place 0x100 into the protected-mode code, named by payload_offset/length. */
  compressed?: Uint8Array;
} = {}): Uint8Array {
  const setupSects = o.setupSects ?? 4;
  const payloadOffset = 0x100;
  const pmSize = Math.max(o.payload ?? 0x1000, o.compressed === undefined ? 0 : payloadOffset + o.compressed.length);
  const img = new Uint8Array((setupSects + 1) * 512 + pmSize);
  const v = new DataView(img.buffer);
  v.setUint8(0x1f1, setupSects);
  v.setUint16(0x1fe, 0xaa55, true);
  v.setUint8(0x200, 0xeb);
  v.setInt8(0x201, 0x6a); // header ends at 0x26c, like Linux 6.1's
  v.setUint32(0x202, o.magic ?? 0x53726448, true);
  v.setUint16(0x206, o.version ?? 0x020f, true);
  v.setUint8(0x211, o.loadflags ?? 0x01);
  v.setUint32(0x214, 0x100000, true);
  v.setUint32(0x22c, o.initrdAddrMax ?? 0x7fffffff, true);
  v.setUint32(0x230, 0x200000, true);
  v.setUint8(0x234, o.relocatable ?? 1);
  v.setUint16(0x236, o.xloadflags ?? 0x7f, true);
  v.setUint32(0x238, o.cmdlineSize ?? 0x7ff, true);
  v.setBigUint64(0x258, BigInt(o.prefAddress ?? 0x1000000), true);
  v.setUint32(0x260, o.initSize ?? 0x400000, true);
  if (o.compressed !== undefined) {
    v.setUint32(0x248, payloadOffset, true);
    v.setUint32(0x24c, o.compressed.length, true);
    img.set(o.compressed, (setupSects + 1) * 512 + payloadOffset);
  }
  return img;
}

/**
 * A bzImage whose `payloadBytes` of protected-mode code are random (none of it zero, so its loader
 * writes every page of it, at the preferred 16 MiB), in a fresh temporary file: its path. Nothing
 * runs it; it is for what a loader leaves in RAM.
 */
export function randomBzImageFile(payloadBytes: number): string {
  const setupSects = 4;
  const bz = makeBzImage({ setupSects, payload: payloadBytes });
  bz.set(randomBytes(payloadBytes), (setupSects + 1) * 512);
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'tsvmm-bzimage-')), 'bzImage');
  writeFileSync(file, bz);
  return file;
}

/** `data` compressed as the kernel build does: the tool's stream, then size_append's little-endian u32 (gzip's ISIZE is that already). */
export function compressAsKbuild(data: Uint8Array, format: 'gzip' | 'xz' | 'zstd'): Uint8Array {
  if (format === 'gzip') return gzipSync(data);
  const r = format === 'xz'
    ? spawnSync('xz', ['--compress', '--stdout', '--check=crc32'], { input: data })
    : spawnSync('zstd', ['--compress', '--stdout', '--quiet'], { input: data });
  if (r.status !== 0) throw new Error(`${format} failed: ${r.error?.message ?? r.stderr.toString()}`);
  const size = new Uint8Array(4);
  new DataView(size.buffer).setUint32(0, data.length, true);
  return Uint8Array.of(...r.stdout, ...size);
}

/**
 * A minimal ELF64 vmlinux: one PT_LOAD segment at physical `paddr`, entry at its start, 0x800 bytes
 * in the file (from 0x200) of which the last 0x200 are zero (as Debian's kernel carries its .bss), in
 * 0x10000 of memory.
 */
export function makeVmlinux(paddr = 0x1000000, entry = paddr): Uint8Array {
  const img = new Uint8Array(0x1000);
  for (let i = 0; i < 0x600; i++) img[0x200 + i] = (i % 255) + 1;
  const v = new DataView(img.buffer);
  img.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 2, true);
  v.setUint16(18, 62, true);
  v.setBigUint64(24, BigInt(entry), true);
  v.setBigUint64(32, 64n, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, 1, true);
  v.setUint32(64, 1, true); // PT_LOAD
  v.setBigUint64(64 + 8, 0x200n, true); // offset
  v.setBigUint64(64 + 16, 0xffffffff81000000n, true); // vaddr
  v.setBigUint64(64 + 24, BigInt(paddr), true);
  v.setBigUint64(64 + 32, 0x800n, true); // filesz
  v.setBigUint64(64 + 40, 0x10000n, true); // memsz
  return img;
}
