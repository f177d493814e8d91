import { readFileSync } from 'node:fs';
import { ProcessPagemap } from './process-pagemap.js';
import { addon } from '../kvm/addon.js';
import { GiB, HIGH_RAM_START, LOW_RAM_MAX_END, PAGE_SIZE, gpa, type Gpa } from '../arch/x86/layout.js';
import { MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_POPULATE_WRITE } from '../kvm/constants.js';
import { DirtyBitmap, type PageRange } from './dirty-bitmap.js';

/**
 * Guest RAM: private anonymous host mappings, each covering one guest-physical range, advised for
 * transparent huge pages as QEMU's RAM is. All reads and writes the VMM makes into guest memory go
 * through here (the loader, devices, an incoming migration), so that dirty tracking sees every one.
 *
 * Why not a memfd (shared memory), which other processes could map too: shmem gets no huge pages
 * under shmem_enabled=never, the default on Debian and most distributions, and a guest on 4 KiB host
 * pages pays for it in every TLB miss. QEMU with its RAM in a memfd booted Linux to its banner in
 * 5.5 s against 3.9 s with anonymous RAM, and we went from 7.5 to 5.7 s (bench/linux-banner, nested
 * KVM). Threads of this process reach the same pages with attach() (views of the same addresses,
 * no second mapping).
 */

export class GuestMemoryError extends Error {
  override name = 'GuestMemoryError';
}

/** The host (or this process's limits) would not give the guest its RAM: nothing about the guest. */
export class GuestMemoryAllocationError extends GuestMemoryError {
  override name = 'GuestMemoryAllocationError';
}

/**
 * The largest single region. A JS typed array over an external buffer is limited to 4 GiB here, and
 * indices below 2^31 stay small integers in V8, so RAM is cut into regions of at most 2 GiB.
 */
export const MAX_REGION_BYTES = 2 * GiB;

/**
 * Writes at least this long first populate their pages (MADV_POPULATE_WRITE, on 4 KiB pages only: see
 * populate) in one system call, where a copy through the mapping would take a page fault per page it
 * reaches first. The loader's kernel and initrd are tens of MiB; under nested KVM a fault is dear,
 * and a 57 MiB vmlinux took seconds to copy with a fault per 4 KiB (bench/linux-banner).
 */
export const POPULATE_MIN_BYTES = 256 * 1024;

/** A guest-physical range of RAM backed by one host mapping. */
export interface RamRegion {
  readonly start: Gpa;
  readonly sizeBytes: number;
  /**
   * Host virtual address of the mapping, as KVM_SET_USER_MEMORY_REGION takes it; the same in every
   * thread of the process (attach() views it, it does not map it again).
   */
  readonly hva: bigint;
  /** INVARIANT: aliases guest memory; only GuestMemory writes through it. */
  readonly bytes: Uint8Array;
  /** Pages written since the last sync, by the guest (folded in from KVM) or by the VMM. */
  readonly dirty: DirtyBitmap;
}

/** Guest bytes lent for a write that lands later (GuestMemory.lendForWrite). */
export interface GuestWriteLease {
  /** The guest bytes; written only by the one writer, and each part reported with `landed`. */
  readonly view: Uint8Array;
  /** `bytes` bytes from `offset` of `view` hold what the writer put there: their pages are marked. */
  landed(offset: number, bytes: number): void;
}

/** Options that exist only so tests can prove the safety tests fail when the protection is off. */
export interface GuestMemoryTestOptions {
  /** Invariant B off: VMM writes do not mark pages dirty. Never set outside tests. */
  readonly testOnlySkipVmmDirtyMarking?: boolean;
}

/**
 * What another thread of this process needs to reach the same guest RAM with the same dirty tracking
 * (structured-cloneable): the mappings' addresses, the regions' bitmaps and the shared logging switch.
 */
export interface SharedGuestMemory {
  readonly regions: readonly { readonly start: Gpa; readonly sizeBytes: number; readonly hva: bigint; readonly dirtyBits: SharedArrayBuffer }[];
  readonly sizeBytes: number;
  /** Word 0: 1 while VMM writes are being recorded. */
  readonly logging: Int32Array;
  readonly hugePages: boolean;
  readonly preallocated: boolean;
  readonly testOptions: GuestMemoryTestOptions;
}

/** Whether this kernel hands out transparent huge pages at all (to mappings that ask, at least). */
function transparentHugePagesOn(): boolean {
  try {
    return !readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'latin1').includes('[never]');
  } catch {
    return false; // no THP in this kernel
  }
}

/** Where RAM of `sizeBytes` lies: up to 3 GiB from 0, the rest above 4 GiB (the MMIO hole between). */
export function ramLayout(sizeBytes: number): { start: Gpa; sizeBytes: number }[] {
  const ranges: { start: Gpa; sizeBytes: number }[] = [];
  const low = Math.min(sizeBytes, LOW_RAM_MAX_END);
  const push = (start: number, size: number) => {
    for (let done = 0; done < size; done += MAX_REGION_BYTES) {
      ranges.push({ start: gpa(start + done), sizeBytes: Math.min(MAX_REGION_BYTES, size - done) });
    }
  };
  push(0, low);
  if (sizeBytes > low) push(HIGH_RAM_START, sizeBytes - low);
  return ranges;
}

/**
 * INVARIANT B: every write the VMM makes into guest RAM goes through write()/fill() here, and while
 * dirty logging is on each marks the pages it touches in the region's bitmap, so migration sends
 * what the VMM wrote as surely as what the guest wrote. No device holds a writable view of RAM.
 */
export class GuestMemory {
  /**
   * Word 0: whether VMM writes are being recorded (dirty logging on for the VM). Shared with the
   * threads that attach() to this memory, so that a device writing guest RAM from another thread marks
   * its writes exactly when the main thread's would be.
   */
  private readonly loggingFlag: Int32Array;
  /**
   * One DataView per region, for the scalar accessors: the virtqueue code reads and writes a few
   * ring fields per request, and a view per access (subarray) was measurable garbage in nested KVM.
   */
  private readonly views: DataView[];
  /**
   * Whether populate() asks the kernel for anything: not before Linux 5.14 (it refuses the advice),
   * and not on huge pages, where it only costs. Populating 512 MiB of THP-backed RAM 1 MiB at a time,
   * then copying into it, took 0.9-1.1 s on this host, against 50 ms for the copy alone (its first
   * touch of each 2 MiB faults in a whole huge page); on 4 KiB pages populating first took 0.45 s
   * against 1.55 s without.
   */
  private populateHelps: boolean;
  /** /proc/self/pagemap, opened by the first allocatedPages(). */
  private readonly pagemap = new ProcessPagemap();

  private constructor(
    readonly regions: readonly RamRegion[],
    readonly sizeBytes: number,
    private readonly testOptions: GuestMemoryTestOptions,
    /** Whether this GuestMemory made the mappings (create) or views another's (attach). */
    private readonly owner: boolean,
    /** Whether the kernel may back the regions with transparent huge pages. */
    readonly hugePages: boolean,
    /**
     * Whether all RAM was allocated at start (create's `preallocate`): zeroPages then keeps the pages,
     * which were asked for, rather than handing them back to the host.
     */
    readonly preallocated: boolean,
    loggingFlag?: Int32Array,
  ) {
    this.populateHelps = !hugePages;
    this.loggingFlag = loggingFlag ?? new Int32Array(new SharedArrayBuffer(4));
    this.views = regions.map((r) => new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength));
  }

  /**
   * Allocates RAM of `sizeBytes` (a multiple of 4 KiB), laid out by ramLayout. With `preallocate`
   * every page is allocated now (QEMU's -mem-prealloc) rather than at its first write, so that the
   * host's memory is taken, or refused, at start: see preallocateRegion.
   */
  static create(
    sizeBytes: number,
    testOptions: GuestMemoryTestOptions = {},
    options: { readonly hugePages?: boolean; readonly preallocate?: boolean } = {},
  ): GuestMemory {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % PAGE_SIZE !== 0) {
      throw new GuestMemoryError(`guest memory size ${sizeBytes} is not a positive multiple of 4 KiB`);
    }
    const native = addon();
    const preallocate = options.preallocate ?? false;
    const regions: RamRegion[] = [];
    let preallocating = false; // the mappings are made: a failure from here on is the preallocation's
    try {
      for (const { start, sizeBytes: size } of ramLayout(sizeBytes)) {
        const buffer = native.mmapPrivate(size);
        regions.push({ start, sizeBytes: size, hva: native.bufferAddress(buffer), bytes: new Uint8Array(buffer), dirty: new DirtyBitmap(size / PAGE_SIZE) });
        GuestMemory.adviseHugePages(buffer, options.hugePages ?? true);
      }
      preallocating = preallocate;
      if (preallocate) for (const r of regions) GuestMemory.preallocateRegion(r);
    } catch (cause) {
      for (const r of regions) native.munmap(r.bytes.buffer as ArrayBuffer);
      const mib = sizeBytes / 2 ** 20;
      throw new GuestMemoryAllocationError(preallocating
        ? `cannot preallocate ${mib} MiB of guest memory (--mem-prealloc: free host memory, or start without it)`
        : `cannot allocate ${mib} MiB of guest memory (a smaller --mem, or a higher limit on this process's address space)`, { cause });
    }
    return new GuestMemory(regions, sizeBytes, testOptions, true, (options.hugePages ?? true) && transparentHugePagesOn(), preallocate);
  }

  /**
   * Allocates every page of a fresh region without changing it (MADV_POPULATE_WRITE: the write faults
   * taken in one system call, huge pages where the mapping has them). Before Linux 5.14 the kernel
   * refuses the advice (EINVAL), and a write of the zero that is already there to each page takes the
   * faults instead. Out of memory it fails with ENOMEM, where a write fault would have had the process
   * killed mid-run. (A host or cgroup short of memory may OOM-kill the process here instead: still at
   * start, not with the guest running.)
   */
  private static preallocateRegion(r: RamRegion): void {
    try {
      addon().madvise(r.bytes.buffer as ArrayBuffer, r.bytes.byteOffset, r.sizeBytes, MADV_POPULATE_WRITE);
    } catch (e) {
      if ((e as { code?: string }).code !== 'EINVAL') throw e;
      // Only here, before any guest or device runs: the region is all zeros, and stays so.
      for (let at = 0; at < r.sizeBytes; at += PAGE_SIZE) r.bytes[at] = 0;
    }
  }

  /**
   * MADV_HUGEPAGE: huge pages for this mapping when THP is in "madvise" mode (in "always" it has
   * them anyway); MADV_NOHUGEPAGE: none, whatever the mode. A kernel without THP refuses with EINVAL,
   * and RAM then works on 4 KiB pages.
   */
  private static adviseHugePages(buffer: ArrayBuffer, on: boolean): void {
    try {
      addon().madvise(buffer, 0, buffer.byteLength, on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    } catch {
      // no THP here: nothing to ask for
    }
  }

  /** What attach() needs in another thread. */
  shared(): SharedGuestMemory {
    return {
      regions: this.regions.map((r) => ({ start: r.start, sizeBytes: r.sizeBytes, hva: r.hva, dirtyBits: r.dirty.shared })),
      sizeBytes: this.sizeBytes,
      logging: this.loggingFlag,
      hugePages: this.hugePages,
      preallocated: this.preallocated,
      testOptions: this.testOptions,
    };
  }

  /**
   * This guest memory as seen from another thread of this process: views of the same mappings, the
   * same dirty bitmaps and logging switch, so invariant B holds for writes made there. INVARIANT: the
   * thread stops touching guest memory before the owner's dispose() unmaps it (devices are closed
   * before a VM is disposed; multifd channels finish or are terminated before a migration ends).
   */
  static attach(shared: SharedGuestMemory): GuestMemory {
    const native = addon();
    const regions = shared.regions.map((r): RamRegion => ({
      start: r.start, sizeBytes: r.sizeBytes, hva: r.hva, bytes: new Uint8Array(native.mappingView(r.hva, r.sizeBytes)),
      dirty: new DirtyBitmap(r.sizeBytes / PAGE_SIZE, r.dirtyBits),
    }));
    return new GuestMemory(regions, shared.sizeBytes, shared.testOptions, false, shared.hugePages, shared.preallocated, shared.logging);
  }

  /** Ends this thread's use of an attach()ed memory (the mappings stay the owner's). */
  detach(): void {
    if (this.owner) throw new GuestMemoryError('detach: this GuestMemory owns its mappings; dispose() it');
    this.pagemap.close();
  }

  /** Starts or stops recording VMM writes in the regions' dirty bitmaps. */
  setLogging(on: boolean): void {
    Atomics.store(this.loggingFlag, 0, on ? 1 : 0);
  }

  get isLogging(): boolean {
    return Atomics.load(this.loggingFlag, 0) === 1;
  }

  /** The region holding [address, address + length), or undefined if the range is not all RAM of one region. */
  regionOf(address: Gpa, length: number): RamRegion | undefined {
    const i = this.regionIndex(address, length);
    return i < 0 ? undefined : this.regions[i];
  }

  /** Index of the region holding [address, address + length), or -1. */
  private regionIndex(address: Gpa, length: number): number {
    const regions = this.regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]!;
      if (address >= r.start && address + length <= r.start + r.sizeBytes) return i;
    }
    return -1;
  }

  /** Index of the region holding the range; throws the "not inside guest RAM" error otherwise. */
  private regionIndexOrThrow(address: Gpa, length: number): number {
    const i = this.regionIndex(address, length);
    if (i < 0) {
      throw new GuestMemoryError(
        `guest range 0x${address.toString(16)}+0x${length.toString(16)} is not inside guest RAM`,
      );
    }
    return i;
  }

  private bytesAt(address: Gpa, length: number): Uint8Array {
    const r = this.regions[this.regionIndexOrThrow(address, length)]!;
    const offset = address - r.start;
    return r.bytes.subarray(offset, offset + length);
  }

  /**
   * Marks the pages of a write that has landed (invariant B). After, not before: a sync that takes
   * the bit must find the new bytes; a sync between the write and the mark misses nothing, because the
   * bit is then still there for the next one.
   */
  private markWritten(address: Gpa, length: number): void {
    if (length > 0 && this.isLogging && !this.testOptions.testOnlySkipVmmDirtyMarking) {
      const r = this.regionOf(address, length)!;
      r.dirty.markDirty(address - r.start, length);
    }
  }

  write(address: Gpa, data: Uint8Array): void {
    const target = this.bytesAt(address, data.length);
    if (data.length >= POPULATE_MIN_BYTES) this.populate(address, data.length);
    target.set(data);
    this.markWritten(address, data.length);
  }

  /**
   * Lends the guest bytes [address, address + length) to a writer that fills them later, outside any
   * call of ours: a socket read that lands in them (an incoming migration's pages, read straight from
   * the connection into guest RAM; src/migration/ram-record.ts). Populates them first, as write()
   * does. The writer calls `landed` for each part once its bytes are there, which marks its pages
   * (invariant B: the mark follows the write, as in write()).
   * INVARIANT: nothing writes through the view but that writer, and only until it has reported the
   * last part; whatever it writes and does not report escapes the dirty bitmap.
   */
  lendForWrite(address: Gpa, length: number): GuestWriteLease {
    const view = this.bytesAt(address, length);
    if (length >= POPULATE_MIN_BYTES) this.populate(address, length);
    return { view, landed: (offset, bytes) => this.markWritten(gpa(address + offset), bytes) };
  }

  /**
   * Lends `fill` the guest bytes [address, address + length) to write into, for the call only, then
   * marks their pages (invariant B; marked even if `fill` throws, since it may have written part):
   * how a disk is read straight into guest memory, without a bounce buffer. The view must not be kept.
   */
  writeWith(address: Gpa, length: number, fill: (target: Uint8Array) => void): void {
    const target = this.bytesAt(address, length);
    try {
      fill(target);
    } finally {
      this.markWritten(address, length);
    }
  }

  /**
   * Lends `use` the guest bytes [address, address + length) to read, for the call only: how a disk
   * write goes out straight from guest memory. `use` must not write them (they would escape the dirty
   * bitmap) nor keep the view.
   */
  readWith<T>(address: Gpa, length: number, use: (source: Uint8Array) => T): T {
    return use(this.bytesAt(address, length));
  }

  fill(address: Gpa, length: number, value: number): void {
    this.bytesAt(address, length).fill(value);
    this.markWritten(address, length);
  }

  /** A copy of guest bytes (never a view: callers must not be able to write guest memory behind our back). */
  read(address: Gpa, length: number): Uint8Array {
    return this.bytesAt(address, length).slice();
  }

  /** Copies `target.length` guest bytes from `address` into `target` (one copy, no allocation of ours). */
  readInto(address: Gpa, target: Uint8Array): void {
    const i = this.regionIndexOrThrow(address, target.length);
    const r = this.regions[i]!;
    const offset = address - r.start;
    target.set(r.bytes.subarray(offset, offset + target.length));
  }

  /**
   * Allocates and maps the pages of [address, address + length) ahead of a bulk write (an incoming
   * migration's data pages): one MADV_POPULATE_WRITE instead of a page fault per page, which made
   * page faults most of the destination's time (bench/migrate-stream) while RAM was on 4 KiB pages.
   * Nothing on huge pages (see populateHelps). A hint only: nothing is written, and a kernel without
   * the advice (before 5.14) just takes the faults.
   */
  populate(address: Gpa, length: number): void {
    if (!this.populateHelps || length <= 0) return;
    const r = this.regionOf(address, length);
    if (r === undefined) return;
    try {
      addon().madvise(r.bytes.buffer as ArrayBuffer, r.bytes.byteOffset + (address - r.start), length, MADV_POPULATE_WRITE);
    } catch {
      this.populateHelps = false;
    }
  }

  /**
   * Writes zeros over whole pages by releasing them (MADV_DONTNEED: a private anonymous page read
   * after it is a fresh zero page): a zero page costs no memory and no copy. KVM's MMU notifier drops
   * the guest's mappings of them too. In preallocated RAM the pages stay: those not zero already are
   * cleared in place (clearPages), so RAM asked for at start is still there when the guest writes it.
   * Marked like any VMM write (invariant B).
   */
  zeroPages(address: Gpa, length: number): void {
    const r = this.wholePagesRegion('zeroPages', address, length);
    const offset = address - r.start;
    if (this.preallocated) addon().clearPages(r.bytes.subarray(offset, offset + length), PAGE_SIZE);
    else addon().madvise(r.bytes.buffer as ArrayBuffer, r.bytes.byteOffset + offset, length, MADV_DONTNEED);
    this.markWritten(address, length);
  }

  /**
   * zeroPages over only the pages of [address, address + length) that are marked written (their
   * region's dirty bitmap), for RAM known to be zero wherever no page is marked (Vm.ramZeroUnlessMarked):
   * the others are zero already. Preallocated RAM is then not read to find that out (clearPages): a
   * 1 GiB dirtier's incoming migration spent 89-107 ms of the destination's main thread on its 960 MiB
   * of zero pages, where the whole migration took 267-375 ms (kvm_pvm, 3 runs).
   */
  zeroMarkedPages(address: Gpa, length: number): void {
    const r = this.wholePagesRegion('zeroMarkedPages', address, length);
    for (const run of r.dirty.markedRuns((address - r.start) / PAGE_SIZE, length / PAGE_SIZE)) {
      this.zeroPages(gpa(r.start + run.firstPage * PAGE_SIZE), run.count * PAGE_SIZE);
    }
  }

  /** The region holding [address, address + length), whole pages of one region; else throws, naming `caller`. */
  private wholePagesRegion(caller: string, address: Gpa, length: number): RamRegion {
    if (address % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) throw new GuestMemoryError(`${caller}: 0x${address.toString(16)}+0x${length.toString(16)} is not whole pages`);
    const r = this.regionOf(address, length);
    if (r === undefined) this.bytesAt(address, length); // throws the usual "not inside guest RAM"
    return r!;
  }

  /**
   * Per region, one byte per `chunkBytes` (a multiple of 4 KiB): 1 where no page of the chunk is
   * mapped (allocatedPages), so that all of it reads as zero without being read. For hashing RAM (a
   * migration's verify) without reading what the guest never wrote, which would map it. Only the
   * kernel's word counts here, never the VMM's marks (Vm.ramZeroUnlessMarked): verify exists to catch
   * what the VMM's own bookkeeping got wrong.
   */
  knownZeroChunks(chunkBytes: number): Uint8Array[] {
    const pagesPerChunk = chunkBytes / PAGE_SIZE;
    return this.regions.map((r, i) => {
      const zero = new Uint8Array(Math.ceil(r.sizeBytes / chunkBytes)).fill(1);
      for (const run of this.allocatedPages(i)) zero.fill(0, Math.floor(run.firstPage / pagesPerChunk), Math.floor((run.firstPage + run.count - 1) / pagesPerChunk) + 1);
      return zero;
    });
  }

  /**
   * The page ranges of region `index` that may hold data: every page the process has mapped (present)
   * or swapped out, from /proc/self/pagemap. Every other page was never touched, or was released, and
   * reads as zero; nothing here reads RAM, which would map pages in. A page the guest or the VMM only
   * read counts as present (the shared zero page), and a huge page counts whole: the caller finds
   * those zeros by reading them.
   */
  allocatedPages(index: number): PageRange[] {
    const r = this.regions[index]!;
    const pages = r.sizeBytes / PAGE_SIZE;
    try {
      // No pagemap here (a /proc without it): every page may hold data, and the caller reads them all.
      return this.pagemap.mappedRanges(r.hva, pages, `region ${index}`) ?? [{ firstPage: 0, count: pages }];
    } catch (e) {
      throw new GuestMemoryError((e as Error).message, { cause: e });
    }
  }

  /** Little-endian scalar reads and writes (virtqueue rings, request headers); writes are marked. */
  readU16(address: Gpa): number {
    const i = this.regionIndexOrThrow(address, 2);
    return this.views[i]!.getUint16(address - this.regions[i]!.start, true);
  }

  readU32(address: Gpa): number {
    const i = this.regionIndexOrThrow(address, 4);
    return this.views[i]!.getUint32(address - this.regions[i]!.start, true);
  }

  writeU16(address: Gpa, value: number): void {
    const i = this.regionIndexOrThrow(address, 2);
    this.views[i]!.setUint16(address - this.regions[i]!.start, value, true);
    this.markWritten(address, 2);
  }

  writeU32(address: Gpa, value: number): void {
    const i = this.regionIndexOrThrow(address, 4);
    this.views[i]!.setUint32(address - this.regions[i]!.start, value, true);
    this.markWritten(address, 4);
  }

  readU64(address: Gpa): bigint {
    const i = this.regionIndexOrThrow(address, 8);
    return this.views[i]!.getBigUint64(address - this.regions[i]!.start, true);
  }

  /** Is the whole range RAM? */
  contains(address: Gpa, length: number): boolean {
    return this.regionOf(address, length) !== undefined;
  }

  /**
   * Unmaps every region. The memslots using them must be gone first, and every thread that attached
   * must have stopped touching them.
   */
  dispose(): void {
    if (!this.owner) throw new GuestMemoryError('dispose: this GuestMemory views another thread\'s mappings; detach() it');
    this.pagemap.close();
    const native = addon();
    for (const r of this.regions) if (r.bytes.buffer.byteLength > 0) native.munmap(r.bytes.buffer as ArrayBuffer);
  }
}
