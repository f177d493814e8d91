/**
 * VERIFY (x-verify, --verify): both sides hash guest RAM at the switch-over, and the destination
 * refuses to resume on a mismatch, naming the ranges that differ (protocol.ts has the record's place
 * in the stream).
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { xxh3Of } from './stream-checksum.js';

/** Bytes of RAM per verify hash: a mismatch is reported to this granularity. */
export const VERIFY_CHUNK_BYTES = 2 * 1024 * 1024;

/** Chunks hashed between two turns of the event loop (hashRegions): 64 MiB, a few milliseconds. */
const VERIFY_YIELD_CHUNKS = 32;

/**
 * XXH3-64 of every 2 MiB of each RAM region, hex: the seed's md5 check, built in, and precise. It
 * finds RAM that differs by accident (the 2015 bug lost pages), as the stream's checksum finds bytes
 * garbled on the way; a source that lies could send any RAM, and keeping it out is TLS's job. Both
 * sides hash in the guest's pause: with SHA-256 (stream version 10) a verified 1 GiB migration
 * stopped the guest for 1.54-1.59 s on kvm_pvm, against a few milliseconds without verify.
 * Yields to the event loop every VERIFY_YIELD_CHUNKS chunks: QMP (query-migrate, migrate_cancel) keeps
 * answering while gigabytes are hashed.
 * A chunk `zeroChunks` says is zero (GuestMemory.knownZeroChunks) is not read: its hash is that of
 * zeros. Reading RAM the guest never wrote cost ~45-55 ms per GiB, and an idle 4 GiB guest's verified
 * migration stopped it for ~210 ms.
 */
export async function hashRegions(
  regions: readonly { bytes: Uint8Array }[],
  options: {
    /** Checked at each turn of the event loop: true stops the hashing (what it returns is then partial). */
    readonly stop?: () => boolean;
    /** Per region, one byte per VERIFY_CHUNK_BYTES: 1 where the chunk is known to be all zero. */
    readonly zeroChunks?: readonly Uint8Array[];
  } = {},
): Promise<string[][]> {
  const all: string[][] = [];
  const zeroHashes = new Map<number, string>();
  const hexOf = (bytes: Uint8Array) => xxh3Of(bytes).toString(16).padStart(16, '0');
  for (let i = 0; i < regions.length; i++) {
    const r = regions[i]!;
    const zero = options.zeroChunks?.[i];
    const hashes: string[] = [];
    for (let at = 0; at < r.bytes.length; at += VERIFY_CHUNK_BYTES) {
      const bytes = Math.min(VERIFY_CHUNK_BYTES, r.bytes.length - at);
      if (zero?.[at / VERIFY_CHUNK_BYTES] === 1) {
        let h = zeroHashes.get(bytes);
        if (h === undefined) zeroHashes.set(bytes, (h = hexOf(new Uint8Array(bytes))));
        hashes.push(h);
        continue;
      }
      hashes.push(hexOf(r.bytes.subarray(at, at + bytes)));
      if (hashes.length % VERIFY_YIELD_CHUNKS === 0) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (options.stop?.() === true) return all;
      }
    }
    all.push(hashes);
  }
  return all;
}

/**
 * hashRegions of a VM's RAM as verify takes it, the same on both sides: chunks the kernel says were
 * never mapped (GuestMemory.knownZeroChunks) are not read.
 */
export function hashGuestMemory(memory: Pick<GuestMemory, 'regions' | 'knownZeroChunks'>, stop?: () => boolean): Promise<string[][]> {
  return hashRegions(memory.regions, { stop, zeroChunks: memory.knownZeroChunks(VERIFY_CHUNK_BYTES) });
}

/** The guest ranges whose hashes differ ('0x200000-0x3fffff'), or [] when all match. */
export function verifyMismatches(regions: readonly { start: number; sizeBytes: number }[], source: string[][], mine: string[][]): string[] {
  const bad: string[] = [];
  regions.forEach((r, i) => {
    const a = source[i] ?? [];
    const b = mine[i] ?? [];
    for (let c = 0; c < Math.max(a.length, b.length); c++) {
      if (a[c] !== b[c]) {
        const from = r.start + c * VERIFY_CHUNK_BYTES;
        bad.push(`0x${from.toString(16)}-0x${(Math.min(from + VERIFY_CHUNK_BYTES, r.start + r.sizeBytes) - 1).toString(16)}`);
      }
    }
  });
  return bad;
}
