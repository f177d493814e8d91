import { addon } from '../kvm/addon.js';

/** Bytes of an XXH64 running state (the addon's Xxh64State); all zero = nothing fed yet. */
const XXH64_STATE_BYTES = 80;

/**
 * The running checksum of one connection of a migration stream: a byte count and the XXH64 of those
 * bytes (END and SYNC records carry both). It guards against a stream that was cut, spliced or
 * garbled on its way, not against an attacker (that is TLS's job). It sees every byte of guest RAM
 * twice per migration, once on each side, so it must run at memory speed: XXH64 in the addon does,
 * on real hardware and emulated alike; CRC-32C (version 2) needed the crc32 instruction, which under
 * nested KVM on TCG ran at ~50 MB/s and took half of each side's time (bench/migrate, --cpu-prof).
 */
export class StreamChecksum {
  private readonly state = new Uint8Array(XXH64_STATE_BYTES);
  private count = 0;

  update(bytes: Uint8Array): void {
    addon().xxh64Update(this.state, bytes);
    this.count += bytes.length;
  }

  /** Bytes fed so far. */
  get bytes(): number {
    return this.count;
  }

  /** XXH64 (seed 0) of the bytes fed so far. */
  get value(): bigint {
    return addon().xxh64Digest(this.state);
  }

  /** Whether a record's (bytes, hash) claim matches what was fed. */
  matches(bytes: number, hash: bigint): boolean {
    return bytes === this.count && hash === this.value;
  }
}
