import { BootError } from './boot-error.js';

/**
 * A bzImage's payload: the vmlinux ELF (with its relocation table appended) compressed by the kernel's
 * build (arch/x86/boot/compressed/Makefile), which the decompressor in the bzImage unpacks at boot.
 *
 * Unpacking it on the host instead lets tsvmm enter the kernel's own startup_64 directly, as Firecracker
 * and Cloud Hypervisor do with a vmlinux: on this machine's KVM the guest's CPL0 code is emulated, and the
 * guest's xz decompressor was most of the time to the banner. Native tools do the unpacking (Node has
 * only zlib); the build's `size_append` put the uncompressed size in the payload's last four bytes
 * (gzip's own ISIZE trailer holds it too), which checks the result.
 */

export type PayloadCompression = 'gzip' | 'xz' | 'zstd' | 'lz4' | 'bzip2' | 'lzma' | 'lzo';

/** Magic numbers at the payload's start, as the kernel's decompressor selection reads them (lib/decompress.c). */
const MAGICS: readonly (readonly [PayloadCompression, readonly number[]])[] = [
  ['gzip', [0x1f, 0x8b]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['lz4', [0x02, 0x21, 0x4c, 0x18]], // the legacy frame `lz4 -l` writes
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['lzma', [0x5d, 0x00, 0x00]],
  ['lzo', [0x89, 0x4c, 0x5a, 0x4f]],
];

export function payloadCompression(payload: Uint8Array): PayloadCompression | undefined {
  return MAGICS.find(([, magic]) => magic.every((b, i) => payload[i] === b))?.[0];
}

/** The uncompressed size the build appended (little-endian u32; gzip's ISIZE is the same field). */
export function declaredSize(payload: Uint8Array): number {
  if (payload.length < 4) throw new BootError(`bzImage payload is ${payload.length} bytes: the file is damaged`);
  return new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(payload.length - 4, true);
}

/**
 * The tool that unpacks each format from stdin to stdout. Every format but gzip carries `size_append`'s
 * four bytes after its stream, which these tools would read as a damaged second stream, so they are cut.
 * lzo (lzop) is left to the guest: its kernel framing is not what lzop reads.
 */
const TOOLS: Partial<Record<PayloadCompression, readonly [string, readonly string[]]>> = {
  xz: ['xz', ['--decompress', '--stdout', '--format=xz']],
  lzma: ['xz', ['--decompress', '--stdout', '--format=lzma']],
  zstd: ['zstd', ['--decompress', '--stdout', '--quiet']],
  lz4: ['lz4', ['--decompress', '--stdout', '--quiet']],
  bzip2: ['bzip2', ['--decompress', '--stdout']],
};

/**
 * What became of a payload: unpacked; left to the guest because the host does not unpack its format
 * ('unsupported'), or because the tool for it is not installed ('no-tool', which a user can mend). A
 * damaged payload throws BootError instead.
 */
export type Unpacked =
  | { readonly ok: true; readonly vmlinux: Uint8Array }
  | { readonly ok: false; readonly reason: 'unsupported' | 'no-tool'; readonly why: string };

/** Unpacks a bzImage payload on the host, checking its length against the size the build declared. */
export function unpackPayload(payload: Uint8Array): Unpacked {
  const compression = payloadCompression(payload);
  if (compression === undefined) return { ok: false, reason: 'unsupported', why: 'the payload\'s compression is not one tsvmm recognises' };
  const expected = declaredSize(payload);
  let out: Uint8Array;
  if (compression === 'gzip') {
    try {
      out = process.getBuiltinModule('node:zlib').gunzipSync(payload);
    } catch (e) {
      throw new BootError(`bzImage payload (gzip) does not decompress: ${(e as Error).message}: the file is damaged`);
    }
  } else {
    const tool = TOOLS[compression];
    if (tool === undefined) return { ok: false, reason: 'unsupported', why: `no host decompressor is used for ${compression}` };
    const [cmd, args] = tool;
    // node:child_process (and the node:net it loads) only when a bzImage is unpacked, not at every start.
    const r = process.getBuiltinModule('node:child_process').spawnSync(cmd, args, { input: payload.subarray(0, payload.length - 4), maxBuffer: expected + 1, stdio: ['pipe', 'pipe', 'pipe'] });
    if (r.error !== undefined) {
      const code = (r.error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { ok: false, reason: 'no-tool', why: `${cmd} is not installed (apt install ${cmd === 'xz' ? 'xz-utils' : cmd})` };
      if (code === 'ENOBUFS') throw new BootError(`bzImage payload (${compression}) unpacks to more than the ${expected} bytes the image declares: the file is damaged`);
      throw new BootError(`cannot run ${cmd} to unpack the bzImage payload: ${r.error.message}`);
    }
    if (r.status !== 0) {
      throw new BootError(`bzImage payload (${compression}) does not decompress: ${cmd} says ${r.stderr.toString().trim() || `status ${r.status}`}: the file is damaged`);
    }
    out = r.stdout;
  }
  if (out.length !== expected) {
    throw new BootError(`bzImage payload (${compression}) unpacks to ${out.length} bytes but the image declares ${expected}: the file is damaged`);
  }
  return { ok: true, vmlinux: out };
}
