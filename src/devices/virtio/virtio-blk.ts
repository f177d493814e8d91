import { gpa, type Gpa } from '../../arch/x86/layout.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { BlockBackend, SyncBlockBackend } from './block-backend.js';
import { BLK_ID_BYTES, BLK_SECTOR_SIZE, BlkFeature, BlkStatus, BlkType, DeviceId, Feature, Interrupt } from './constants.js';
import type { TransportIdentity, VirtioMmioTransport } from './mmio-transport.js';
import { VirtioDevice } from './virtio-device.js';
import { VirtqueueError, gatherReadable, scatterWritable, type DescriptorChain } from './virtqueue.js';

/** Entries in the request queue (QEMU's virtio-blk default queue-size). */
export const BLK_QUEUE_SIZE = 256;
/** seg_max: data segments per request (queue size minus header and status, as QEMU reports). */
export const BLK_SEG_MAX = BLK_QUEUE_SIZE - 2;
/** struct virtio_blk_req header: type u32, reserved u32, sector u64. */
const REQ_HEADER_BYTES = 16;

/** What the transport offers for a disk of `backend`'s size (5.2.4 struct virtio_blk_config). */
export function blkIdentity(backend: Pick<BlockBackend, 'sizeBytes' | 'readOnly'>): TransportIdentity {
  const config = new Uint8Array(24);
  const v = new DataView(config.buffer);
  v.setBigUint64(0, BigInt(Math.floor(backend.sizeBytes / BLK_SECTOR_SIZE)), true); // capacity
  v.setUint32(12, BLK_SEG_MAX, true); // seg_max
  v.setUint32(20, BLK_SECTOR_SIZE, true); // blk_size
  let features = (1n << BigInt(BlkFeature.SEG_MAX)) | (1n << BigInt(BlkFeature.BLK_SIZE)) |
    (1n << BigInt(BlkFeature.FLUSH)) | (1n << BigInt(Feature.RING_INDIRECT_DESC));
  if (backend.readOnly) features |= 1n << BigInt(BlkFeature.RO);
  return { deviceId: DeviceId.BLOCK, numQueues: 1, queueNumMax: BLK_QUEUE_SIZE, features, config };
}

/**
 * virtio-blk (5.2) over a BlockBackend. Requests are popped on notification and run concurrently on
 * the backend; each completes into the used ring when its I/O ends. A failed read or write answers
 * VIRTIO_BLK_S_IOERR; a write to a read-only disk answers VIRTIO_BLK_S_IOERR too (5.2.6.2); FLUSH
 * waits for the writes before it and then fdatasyncs.
 */
export class VirtioBlk extends VirtioDevice {
  private readonly capacityBytes: number;
  /** Writes submitted and not yet finished, which a FLUSH must wait for. */
  private readonly writes = new Set<Promise<unknown>>();

  constructor(name: string, transport: VirtioMmioTransport, mem: GuestMemory, private readonly backend: BlockBackend) {
    super(name, transport, mem);
    this.capacityBytes = Math.floor(backend.sizeBytes / BLK_SECTOR_SIZE) * BLK_SECTOR_SIZE;
  }

  protected processQueue(q: number): void {
    const queue = this.queue(q);
    if (queue === undefined) return;
    const epoch = this.currentEpoch();
    const backend = this.backend;
    if (isSyncBlockBackend(backend)) {
      // Each request is done before the next is popped, so a batch completes within this call: its
      // used entries go in as they finish and one interrupt follows the batch, not one per request.
      // While it is served the driver is asked not to kick (QEMU's virtio_blk_handle_vq does the
      // same): what it adds meanwhile is popped here anyway, and each kick it skips is a vCPU exit,
      // ~10 us of guest time on kvm_pvm against ~45 us per 4 KiB request. Kicks go back on before
      // the ring is looked at a last time (see setNotification).
      this.guarded(() => {
        let used = 0;
        do {
          queue.setNotification(false);
          for (let chain = queue.pop(); chain !== undefined; chain = this.active ? queue.pop() : undefined) {
            const len = this.serveNow(chain, backend, epoch);
            if (!this.isCurrent(epoch)) return; // reset under us: this batch is the old device's
            queue.pushUsed(chain.head, len);
            used++;
          }
          queue.setNotification(true);
        } while (this.active && queue.pending() > 0);
        if (used > 0 && queue.wantsInterrupt()) this.transport.raiseInterrupt(Interrupt.USED_BUFFER);
      });
      return;
    }
    this.guarded(() => {
      for (let chain = queue.pop(); chain !== undefined; chain = this.active ? queue.pop() : undefined) {
        const c = chain;
        this.track(this.serve(c, epoch).then((len) => this.complete(q, c.head, len, epoch)));
      }
    });
  }

  /**
   * Runs one request on a synchronous backend, the data moving straight between the image and guest
   * memory (GuestMemory lends each buffer for the call; reads into it mark its pages, invariant B).
   * Returns the bytes written into the chain (data + status). The same answers as serve().
   */
  private serveNow(chain: DescriptorChain, backend: SyncBlockBackend, epoch: number): number {
    const { type, offset, dataIn, statusAt } = this.parse(chain); // a bad chain throws: the device breaks
    let status: number = BlkStatus.OK;
    let written = 0;
    try {
      switch (type) {
        case BlkType.IN: {
          if (!this.inRange(offset, dataIn)) { status = BlkStatus.IOERR; break; }
          // Every writable buffer in order, the status byte (the chain's last byte) excepted.
          let at = offset;
          for (const seg of chain.writable) {
            const n = Math.min(seg.len, offset + dataIn - at);
            if (n <= 0) break;
            const from = at;
            this.mem.writeWith(gpa(seg.addr), n, (target) => backend.readSync(target, from));
            at += n;
          }
          written = dataIn;
          break;
        }
        case BlkType.OUT: {
          const dataOut = chain.readableBytes - REQ_HEADER_BYTES;
          if (backend.readOnly || !this.inRange(offset, dataOut)) { status = BlkStatus.IOERR; break; }
          // The readable buffers after the 16-byte header, which may share the first of them.
          let skip = REQ_HEADER_BYTES;
          let at = offset;
          for (const seg of chain.readable) {
            if (skip >= seg.len) { skip -= seg.len; continue; }
            const n = seg.len - skip;
            const to = at;
            this.mem.readWith(gpa(seg.addr + skip), n, (source) => backend.writeSync(source, to));
            at += n;
            skip = 0;
          }
          break;
        }
        case BlkType.FLUSH:
          if (!backend.readOnly) backend.flushSync(); // every earlier write has completed already
          break;
        case BlkType.GET_ID:
          written = this.answerId(chain, dataIn);
          break;
        default:
          status = BlkStatus.UNSUPP;
      }
    } catch {
      // The host's I/O failed (EIO, ENOSPC, a vanished file): the guest sees an I/O error, tsvmm lives on.
      status = BlkStatus.IOERR;
      written = 0;
    }
    if (!this.isCurrent(epoch)) return 0;
    this.mem.write(statusAt, Uint8Array.of(status));
    return written + 1;
  }

  /** Runs one request; resolves with the bytes written into the chain (data + status). */
  private async serve(chain: DescriptorChain, epoch: number): Promise<number> {
    let request: BlkRequest;
    try {
      request = this.parse(chain);
    } catch (e) {
      this.guarded(() => { throw e; });
      return 0;
    }
    const { type, offset, dataIn, statusAt } = request;
    let status: number = BlkStatus.OK;
    let written = 0;
    try {
      switch (type) {
        case BlkType.IN: {
          if (!this.inRange(offset, dataIn)) { status = BlkStatus.IOERR; break; }
          const data = new Uint8Array(dataIn);
          await this.backend.read(data, offset);
          if (!this.isCurrent(epoch)) return 0;
          written = scatterWritable(this.mem, chain, data);
          break;
        }
        case BlkType.OUT: {
          const data = gatherReadable(this.mem, chain, REQ_HEADER_BYTES);
          if (this.backend.readOnly || !this.inRange(offset, data.length)) { status = BlkStatus.IOERR; break; }
          const w = this.backend.write(data, offset);
          this.writes.add(w);
          try {
            await w;
          } finally {
            this.writes.delete(w);
          }
          break;
        }
        case BlkType.FLUSH:
          await Promise.allSettled([...this.writes]);
          if (!this.backend.readOnly) await this.backend.flush();
          break;
        case BlkType.GET_ID:
          written = this.answerId(chain, dataIn);
          break;
        default:
          status = BlkStatus.UNSUPP;
      }
    } catch {
      // The host's I/O failed (EIO, ENOSPC, a vanished file): the guest sees an I/O error, tsvmm lives on.
      status = BlkStatus.IOERR;
    }
    if (!this.isCurrent(epoch)) return 0;
    this.guarded(() => this.mem.write(statusAt, Uint8Array.of(status)));
    return this.isCurrent(epoch) ? written + 1 : 0;
  }

  /** What a chain asks for; a chain without a header or a status byte throws VirtqueueError. */
  private parse(chain: DescriptorChain): BlkRequest {
    const last = chain.writable[chain.writable.length - 1];
    if (chain.readableBytes < REQ_HEADER_BYTES || last === undefined || last.len < 1) {
      throw new VirtqueueError(`request ${chain.head} has no ${chain.readableBytes < REQ_HEADER_BYTES ? 'header' : 'status byte'}`);
    }
    const { type, sector } = this.header(chain);
    return { type, offset: sector * BLK_SECTOR_SIZE, dataIn: chain.writableBytes - 1, statusAt: gpa(last.addr + last.len - 1) };
  }

  /** GET_ID: the backend's id, as much as fits the chain's `dataIn` bytes; returns the bytes written. */
  private answerId(chain: DescriptorChain, dataIn: number): number {
    const id = new Uint8Array(BLK_ID_BYTES);
    id.set(new TextEncoder().encode(this.backend.id).subarray(0, BLK_ID_BYTES));
    return scatterWritable(this.mem, chain, id.subarray(0, Math.min(BLK_ID_BYTES, dataIn)));
  }

  /** The request header's type and sector (a sector above 2^53 comes out inexact, and out of range). */
  private header(chain: DescriptorChain): { type: number; sector: number } {
    const first = chain.readable[0]!;
    if (first.len >= REQ_HEADER_BYTES) {
      // The usual layout: the whole header in the first buffer, read in place without a copy.
      const at = first.addr;
      return { type: this.mem.readU32(gpa(at)), sector: this.mem.readU32(gpa(at + 8)) + this.mem.readU32(gpa(at + 12)) * 0x1_0000_0000 };
    }
    const h = new DataView(gatherReadable(this.mem, chain, 0, REQ_HEADER_BYTES).buffer);
    return { type: h.getUint32(0, true), sector: Number(h.getBigUint64(8, true)) };
  }

  private inRange(offset: number, len: number): boolean {
    return Number.isSafeInteger(offset) && offset + len <= this.capacityBytes;
  }
}

/** A type import only: block-backend.js (fs/promises) stays out of the CLI's start-up chunk. */
function isSyncBlockBackend(b: BlockBackend): b is SyncBlockBackend {
  return typeof (b as Partial<SyncBlockBackend>).readSync === 'function';
}

/** A request as its chain states it: type, byte offset on the disk, bytes the device may write before the status byte, and where that byte is. */
interface BlkRequest {
  readonly type: number;
  readonly offset: number;
  readonly dataIn: number;
  readonly statusAt: Gpa;
}
