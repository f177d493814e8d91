import { gpa } from '../../arch/x86/layout.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { DESC_SIZE, DescFlag, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY } from './constants.js';
import type { QueueConfig } from './mmio-transport.js';

/**
 * A split virtqueue (virtio 1.x, 2.6) as the device side sees it: pops descriptor chains the driver
 * made available, and returns them through the used ring. Runs on the main thread, over GuestMemory,
 * so every used-ring write is a marked VMM write (invariant B).
 *
 * The guest is not trusted: a chain that loops, points outside RAM, nests indirect tables, puts a
 * device-readable buffer after a device-writable one, or adds up to more than MAX_CHAIN_BYTES makes
 * pop() throw VirtqueueError, and the device then marks itself DEVICE_NEEDS_RESET. Nothing is read or
 * written outside guest RAM: every range is checked by GuestMemory before it is touched.
 */

export class VirtqueueError extends Error {
  override name = 'VirtqueueError';
}

/** One guest buffer of a chain. */
export interface Segment {
  readonly addr: number;
  readonly len: number;
}

/** A descriptor chain: the device-readable buffers, then the device-writable ones. */
export interface DescriptorChain {
  /** The head descriptor index: what goes back in the used ring. */
  readonly head: number;
  readonly readable: Segment[];
  readonly writable: Segment[];
  readonly readableBytes: number;
  readonly writableBytes: number;
}

/** The most a chain may carry in either direction: the used ring's len is a u32. */
export const MAX_CHAIN_BYTES = 0xffff_ffff;

/** Where the device is in a queue: what migration carries. */
export interface QueuePosition {
  /** The next avail ring entry to pop (free-running u16). */
  lastAvailIdx: number;
  /** used->idx as last written (free-running u16). */
  usedIdx: number;
}

/** A cell for Atomics.add: a locked instruction, i.e. a full fence, between a store and a later load. */
const FENCE = new Int32Array(new SharedArrayBuffer(4));

export class SplitQueue {
  lastAvailIdx: number;
  usedIdx: number;
  /** What used->flags last said about notifications; unknown until set (a restored ring keeps its own). */
  private notifying: boolean | undefined;
  private readonly size: number;
  private readonly desc: number;
  private readonly avail: number;
  private readonly used: number;

  constructor(
    private readonly mem: GuestMemory,
    config: QueueConfig,
    /** Whether VIRTIO_F_RING_INDIRECT_DESC was negotiated. */
    private readonly indirect: boolean,
    position: QueuePosition = { lastAvailIdx: 0, usedIdx: 0 },
  ) {
    const { size, desc, avail, used } = config;
    if (size < 1 || size > 32768) throw new VirtqueueError(`queue size ${size} is not in 1..32768`);
    // 2.6: the three parts and their alignment (16, 2, 4 bytes).
    checkRange(mem, desc, DESC_SIZE * size, 'descriptor table');
    checkRange(mem, avail, 6 + 2 * size, 'available ring');
    checkRange(mem, used, 6 + 8 * size, 'used ring');
    if (desc % 16 !== 0 || avail % 2 !== 0 || used % 4 !== 0) throw new VirtqueueError('a virtqueue part is misaligned');
    this.size = size;
    this.desc = desc;
    this.avail = avail;
    this.used = used;
    this.lastAvailIdx = position.lastAvailIdx & 0xffff;
    this.usedIdx = position.usedIdx & 0xffff;
  }

  position(): QueuePosition {
    return { lastAvailIdx: this.lastAvailIdx, usedIdx: this.usedIdx };
  }

  /** How many chains the driver has made available and we have not popped. */
  pending(): number {
    const availIdx = this.mem.readU16(gpa(this.avail + 2));
    const n = (availIdx - this.lastAvailIdx) & 0xffff;
    if (n > this.size) throw new VirtqueueError(`avail idx ${availIdx} is ${n} entries ahead of ${this.lastAvailIdx}, more than the queue's ${this.size}`);
    return n;
  }

  /** Pops the next available chain, or undefined if there is none. */
  pop(): DescriptorChain | undefined {
    if (this.pending() === 0) return undefined;
    const head = this.mem.readU16(gpa(this.avail + 4 + 2 * (this.lastAvailIdx % this.size)));
    const chain = this.walk(head);
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    return chain;
  }

  /** Returns chain `head` to the driver with `len` bytes written into its writable buffers. */
  pushUsed(head: number, len: number): void {
    const slot = this.used + 4 + 8 * (this.usedIdx % this.size);
    this.mem.writeU32(gpa(slot), head);
    this.mem.writeU32(gpa(slot + 4), len);
    // The element before the index: a driver that sees the new idx must find the element written
    // (x86 keeps stores in order; these are plain stores into the shared mapping).
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.mem.writeU16(gpa(this.used + 2), this.usedIdx);
  }

  /**
   * Asks the driver to notify the device of new buffers, or not to (VIRTQ_USED_F_NO_NOTIFY; advisory:
   * a driver may kick anyway). Whoever turns notifications back on must look at pending() again after
   * this returns: a driver that made buffers available before it saw the flag cleared did not kick.
   * The fence keeps that later load of avail->idx from passing the flag's store (x86 lets a load pass
   * an earlier store to another address); the driver fences between avail->idx and used->flags.
   */
  setNotification(enabled: boolean): void {
    if (enabled === this.notifying) return;
    this.notifying = enabled;
    this.mem.writeU16(gpa(this.used), enabled ? 0 : VIRTQ_USED_F_NO_NOTIFY);
    Atomics.add(FENCE, 0, 0);
  }

  /** Whether the driver wants an interrupt for used buffers (VIRTQ_AVAIL_F_NO_INTERRUPT clear). */
  wantsInterrupt(): boolean {
    return (this.mem.readU16(gpa(this.avail)) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  private walk(head: number): DescriptorChain {
    if (head >= this.size) throw new VirtqueueError(`chain head ${head} is outside the queue of ${this.size}`);
    const readable: Segment[] = [];
    const writable: Segment[] = [];
    let readableBytes = 0;
    let writableBytes = 0;
    // Direct table first; an INDIRECT descriptor switches to its table (2.6.5.3).
    let table = this.desc;
    let tableSize = this.size;
    let inIndirect = false;
    let index = head;
    let steps = 0;
    for (;;) {
      if (++steps > tableSize) throw new VirtqueueError(`descriptor chain from ${head} is longer than its table (${tableSize}): a loop`);
      const at = table + DESC_SIZE * index;
      const addr = this.mem.readU32(gpa(at)) + this.mem.readU32(gpa(at + 4)) * 0x1_0000_0000;
      const len = this.mem.readU32(gpa(at + 8));
      const flags = this.mem.readU16(gpa(at + 12));
      const next = this.mem.readU16(gpa(at + 14));
      if (flags & DescFlag.INDIRECT) {
        if (!this.indirect) throw new VirtqueueError('an indirect descriptor, but VIRTIO_F_RING_INDIRECT_DESC was not negotiated');
        if (inIndirect) throw new VirtqueueError('an indirect descriptor inside an indirect table');
        if (flags & DescFlag.NEXT) throw new VirtqueueError('an indirect descriptor with NEXT set');
        if (len === 0 || len % DESC_SIZE !== 0) throw new VirtqueueError(`indirect table length ${len} is not a positive multiple of ${DESC_SIZE}`);
        if (addr % 16 !== 0) throw new VirtqueueError('indirect table is misaligned');
        checkRange(this.mem, addr, len, 'indirect descriptor table');
        table = addr;
        tableSize = len / DESC_SIZE;
        inIndirect = true;
        index = 0;
        steps = 0;
        continue;
      }
      checkRange(this.mem, addr, len, `buffer of descriptor ${index}`);
      if (flags & DescFlag.WRITE) {
        writableBytes += len;
        if (writableBytes > MAX_CHAIN_BYTES) throw new VirtqueueError(`chain from ${head} has more than ${MAX_CHAIN_BYTES} writable bytes`);
        writable.push({ addr, len });
      } else {
        if (writable.length > 0) throw new VirtqueueError(`chain from ${head} has a device-readable buffer after a device-writable one`);
        readableBytes += len;
        if (readableBytes > MAX_CHAIN_BYTES) throw new VirtqueueError(`chain from ${head} has more than ${MAX_CHAIN_BYTES} readable bytes`);
        readable.push({ addr, len });
      }
      if (!(flags & DescFlag.NEXT)) break;
      if (next >= tableSize) throw new VirtqueueError(`descriptor ${index} links to ${next}, outside its table of ${tableSize}`);
      index = next;
    }
    return { head, readable, writable, readableBytes, writableBytes };
  }
}

function checkRange(mem: GuestMemory, addr: number, len: number, what: string): void {
  if (!Number.isSafeInteger(addr) || !mem.contains(gpa(addr), Math.max(len, 1))) {
    throw new VirtqueueError(`${what} at 0x${addr.toString(16)}+0x${len.toString(16)} is not inside guest RAM`);
  }
}

/** Copies a chain's readable bytes out of guest memory, from `skip` bytes in, at most `max` bytes. */
export function gatherReadable(mem: GuestMemory, chain: DescriptorChain, skip = 0, max = Infinity): Uint8Array {
  const total = Math.max(0, Math.min(chain.readableBytes - skip, max));
  const out = new Uint8Array(total);
  let copied = 0;
  let toSkip = skip;
  for (const s of chain.readable) {
    if (copied >= total) break;
    if (toSkip >= s.len) {
      toSkip -= s.len;
      continue;
    }
    const n = Math.min(s.len - toSkip, total - copied);
    mem.readInto(gpa(s.addr + toSkip), out.subarray(copied, copied + n));
    copied += n;
    toSkip = 0;
  }
  return out;
}

/** Writes `data` into a chain's writable buffers from `skip` bytes in; returns the bytes written. */
export function scatterWritable(mem: GuestMemory, chain: DescriptorChain, data: Uint8Array, skip = 0): number {
  let written = 0;
  let toSkip = skip;
  for (const s of chain.writable) {
    if (written >= data.length) break;
    if (toSkip >= s.len) {
      toSkip -= s.len;
      continue;
    }
    const n = Math.min(s.len - toSkip, data.length - written);
    mem.write(gpa(s.addr + toSkip), data.subarray(written, written + n));
    written += n;
    toSkip = 0;
  }
  return written;
}
