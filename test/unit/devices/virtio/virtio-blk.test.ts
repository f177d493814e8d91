import { mkdtempSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../../src/arch/x86/layout.js';
import { GuestMemory } from '../../../../src/memory/guest-memory.js';
import { DiskError, FileBlockBackend, SyncFdBlockBackend, type BlockBackend } from '../../../../src/devices/virtio/block-backend.js';
import { BlkStatus, BlkType, MmioReg, Status, VIRTQ_USED_F_NO_NOTIFY } from '../../../../src/devices/virtio/constants.js';
import { VirtioMmioTransport, createTransportState } from '../../../../src/devices/virtio/mmio-transport.js';
import { VirtioBlk, blkIdentity } from '../../../../src/devices/virtio/virtio-blk.js';
import { TestDriver, bringUp, until } from './test-driver.js';

const HDR = 0x50000;
const DATA = 0x60000;
const STATUS_AT = 0x70000;
const VERSION_1 = 1n << 32n;

describe('virtio-blk over a raw image file', () => {
  let mem: GuestMemory;
  let dir: string;
  let image: string;
  let backend: BlockBackend | undefined;
  beforeEach(() => {
    mem = GuestMemory.create(4 * MiB);
    dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-blk-'));
    image = path.join(dir, 'disk.img');
    const content = new Uint8Array(64 * 1024);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7) & 0xff;
    writeFileSync(image, content);
  });
  afterEach(async () => {
    await backend?.close();
    backend = undefined;
    mem.dispose();
  });

  async function device(readOnly = false, sync = false) {
    backend = await FileBlockBackend.open(image, readOnly);
    const served = sync ? new SyncFdBlockBackend(backend.fd!, backend.sizeBytes, backend.readOnly, backend.id) : backend;
    const levels: boolean[] = [];
    const t = new VirtioMmioTransport(createTransportState(blkIdentity(backend)), { setLevel: (h) => levels.push(h) }, () => {});
    const blk = new VirtioBlk('virtio-blk@test', t, mem, served);
    const d = new TestDriver(mem, 16, 0x10000);
    expect(bringUp(t, VERSION_1, [d]) & Status.DRIVER_OK).toBe(Status.DRIVER_OK);
    return { t, blk, d, levels };
  }

  /** Submits one request and resolves with (status byte, used len). */
  async function request(env: Awaited<ReturnType<typeof device>>, type: number, sector: number, data: { len: number; write?: boolean } | undefined): Promise<{ status: number; len: number }> {
    const header = new DataView(new ArrayBuffer(16));
    header.setUint32(0, type, true);
    header.setBigUint64(8, BigInt(sector), true);
    mem.write(gpa(HDR), new Uint8Array(header.buffer));
    mem.write(gpa(STATUS_AT), Uint8Array.of(0xff));
    const buffers = [{ addr: HDR, len: 16 }];
    if (data !== undefined) buffers.push({ addr: DATA, len: data.len, write: data.write });
    buffers.push({ addr: STATUS_AT, len: 1, write: true } as never);
    const before = env.d.usedIdx();
    env.d.publish(env.d.chain(buffers));
    env.blk.notify(0);
    await until(() => env.d.usedIdx() !== before);
    const [used] = env.d.takeUsed();
    return { status: mem.read(gpa(STATUS_AT), 1)[0]!, len: used!.len };
  }

  it('offers capacity, seg_max and blk_size in its config space', async () => {
    const { t } = await device();
    expect(t.read(MmioReg.CONFIG, 4)).toBe(128); // 64 KiB / 512
    expect(t.read(MmioReg.CONFIG + 4, 4)).toBe(0);
    expect(t.read(MmioReg.CONFIG + 12, 4)).toBe(254);
    expect(t.read(MmioReg.CONFIG + 20, 4)).toBe(512);
  });

  it('reads sectors into guest memory (marked dirty), writes them to the image, and flushes', async () => {
    const env = await device();
    mem.setLogging(true);
    mem.regions[0]!.dirty.getAndReset();
    expect(await request(env, BlkType.IN, 2, { len: 1024, write: true })).toEqual({ status: BlkStatus.OK, len: 1025 });
    const expected = readFileSync(image).subarray(1024, 2048);
    expect(mem.read(gpa(DATA), 1024)).toEqual(new Uint8Array(expected));
    expect(mem.regions[0]!.dirty.dirtyAt(DATA / 4096)).toBe(true);
    expect(env.levels).toEqual([true]);

    mem.write(gpa(DATA), new Uint8Array(512).fill(0xab));
    expect(await request(env, BlkType.OUT, 5, { len: 512 })).toEqual({ status: BlkStatus.OK, len: 1 });
    expect(await request(env, BlkType.FLUSH, 0, undefined)).toEqual({ status: BlkStatus.OK, len: 1 });
    expect(readFileSync(image).subarray(5 * 512, 6 * 512)).toEqual(Buffer.alloc(512, 0xab));
  });

  it('over the dataplane thread\'s synchronous backend: the same answers, completed before the next turn of the event loop', async () => {
    const env = await device(false, true);
    mem.write(gpa(DATA), new Uint8Array(512).fill(0x5a));
    expect(await request(env, BlkType.OUT, 3, { len: 512 })).toEqual({ status: BlkStatus.OK, len: 1 });
    expect(readFileSync(image).subarray(3 * 512, 4 * 512)).toEqual(Buffer.alloc(512, 0x5a));
    expect(await request(env, BlkType.IN, 1, { len: 512, write: true })).toEqual({ status: BlkStatus.OK, len: 513 });
    expect(mem.read(gpa(DATA), 512)).toEqual(new Uint8Array(readFileSync(image).subarray(512, 1024)));
    expect(await request(env, BlkType.FLUSH, 0, undefined)).toEqual({ status: BlkStatus.OK, len: 1 });
    expect((await request(env, BlkType.IN, 127, { len: 1024, write: true })).status).toBe(BlkStatus.IOERR); // past the end

    // One notify, then a macrotask later the request has completed: nothing waits on a thread pool.
    mem.write(gpa(HDR), new Uint8Array(16));
    const before = env.d.usedIdx();
    env.d.publish(env.d.chain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, write: true }, { addr: STATUS_AT, len: 1, write: true }]));
    env.blk.notify(0);
    await new Promise((r) => setImmediate(r));
    expect(env.d.usedIdx()).toBe((before + 1) & 0xffff);
  });

  it('synchronous backend: a batch completes in one notify with one interrupt, data moving straight between image and guest buffers split anyhow, pages marked', async () => {
    const env = await device(false, true);
    mem.setLogging(true);
    mem.regions[0]!.dirty.getAndReset();
    const img = readFileSync(image);
    // IN: 1024 bytes from sector 4 into three writable buffers (300 + 700 + 24 with the status byte).
    const hdrIn = new DataView(new ArrayBuffer(16));
    hdrIn.setUint32(0, BlkType.IN, true);
    hdrIn.setBigUint64(8, 4n, true);
    mem.write(gpa(HDR), new Uint8Array(hdrIn.buffer));
    const A = 0x40000, B = 0x52000, C = 0x61000;
    // OUT: the header and the first 100 data bytes share one buffer; 412 more follow in another.
    const OUT_HDR = 0x70000, OUT_REST = 0x83000;
    const hdrOut = new Uint8Array(116);
    new DataView(hdrOut.buffer).setUint32(0, BlkType.OUT, true);
    new DataView(hdrOut.buffer).setBigUint64(8, 9n, true);
    hdrOut.fill(0x11, 16);
    mem.write(gpa(OUT_HDR), hdrOut);
    mem.write(gpa(OUT_REST), new Uint8Array(412).fill(0x22));
    mem.regions[0]!.dirty.getAndReset();
    env.levels.length = 0;
    const before = env.d.usedIdx();
    env.d.publish(env.d.chain([{ addr: HDR, len: 16 }, { addr: A, len: 300, write: true }, { addr: B, len: 700, write: true }, { addr: C, len: 25, write: true }]));
    env.d.publish(env.d.chain([{ addr: OUT_HDR, len: 116 }, { addr: OUT_REST, len: 412 }, { addr: STATUS_AT, len: 1, write: true }]));
    env.blk.notify(0);
    // Both done within notify(): no promise, no turn of the event loop.
    expect(env.d.usedIdx()).toBe((before + 2) & 0xffff);
    expect(env.levels).toEqual([true]);
    const used = env.d.takeUsed();
    expect(used.map((u) => u.len)).toEqual([1025, 1]);
    expect([...mem.read(gpa(A), 300), ...mem.read(gpa(B), 700), ...mem.read(gpa(C), 24)]).toEqual([...img.subarray(2048, 3072)]);
    expect(mem.read(gpa(C + 24), 1)[0]).toBe(BlkStatus.OK);
    expect(mem.read(gpa(STATUS_AT), 1)[0]).toBe(BlkStatus.OK);
    for (const page of [A, B, C].map((a) => a / 4096)) expect(mem.regions[0]!.dirty.dirtyAt(page)).toBe(true);
    expect(mem.regions[0]!.dirty.dirtyAt(OUT_REST / 4096)).toBe(false); // a disk write only reads guest memory
    expect([...readFileSync(image).subarray(9 * 512, 10 * 512)]).toEqual([...new Uint8Array(100).fill(0x11), ...new Uint8Array(412).fill(0x22)]);
  });

  it('synchronous backend: kicks are off while a batch is served, and what the driver adds meanwhile is served in the same notify; kicks are back on after', async () => {
    const env = await device(false, true);
    const usedFlags = () => mem.readU16(gpa(env.d.config.used));
    const served = (env.blk as unknown as { backend: SyncFdBlockBackend }).backend;
    const real = served.readSync.bind(served);
    const flagsSeen: number[] = [];
    served.readSync = (target, offset) => {
      flagsSeen.push(usedFlags());
      // The driver adds a second request while the first is being served, and (seeing NO_NOTIFY) does not kick.
      if (flagsSeen.length === 1) env.d.publish(env.d.chain([{ addr: HDR, len: 16 }, { addr: DATA + 0x1000, len: 512, write: true }, { addr: STATUS_AT + 1, len: 1, write: true }]));
      return real(target, offset);
    };
    const header = new DataView(new ArrayBuffer(16));
    header.setUint32(0, BlkType.IN, true);
    mem.write(gpa(HDR), new Uint8Array(header.buffer));
    const before = env.d.usedIdx();
    env.d.publish(env.d.chain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, write: true }, { addr: STATUS_AT, len: 1, write: true }]));
    expect(usedFlags()).toBe(0);
    env.blk.notify(0);
    expect(flagsSeen).toEqual([VIRTQ_USED_F_NO_NOTIFY, VIRTQ_USED_F_NO_NOTIFY]);
    expect(env.d.usedIdx()).toBe((before + 2) & 0xffff);
    expect(usedFlags()).toBe(0);
    expect(env.levels).toEqual([true]);
  });

  it('pollQueue (virtqueue polling): serves what the driver made available, else gives up after its budget; kicks are on when it returns; a quiesced device does not poll', async () => {
    const env = await device(false, true);
    const usedFlags = () => mem.readU16(gpa(env.d.config.used));
    const t0 = performance.now();
    expect(env.blk.pollQueue(0, 2)).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2);
    expect(usedFlags()).toBe(0);
    const header = new DataView(new ArrayBuffer(16));
    header.setUint32(0, BlkType.IN, true);
    mem.write(gpa(HDR), new Uint8Array(header.buffer));
    const before = env.d.usedIdx();
    env.d.publish(env.d.chain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, write: true }, { addr: STATUS_AT, len: 1, write: true }]));
    expect(env.blk.pollQueue(0, 1000)).toBe(true);
    expect(env.d.usedIdx()).toBe((before + 1) & 0xffff);
    expect(mem.read(gpa(STATUS_AT), 1)[0]).toBe(BlkStatus.OK);
    expect(usedFlags()).toBe(0);
    await env.blk.quiesce();
    env.d.publish(env.d.chain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, write: true }, { addr: STATUS_AT, len: 1, write: true }]));
    expect(env.blk.pollQueue(0, 1000)).toBe(false);
    expect(env.d.usedIdx()).toBe((before + 1) & 0xffff); // stays in the avail ring, for after the resume
  });

  it('synchronous backend: a failing host I/O or a read-only disk answers IOERR, and a bad chain breaks the device', async () => {
    const env = await device(false, true);
    const served = (env.blk as unknown as { backend: SyncFdBlockBackend }).backend;
    const real = served.readSync.bind(served);
    served.readSync = () => { throw new Error('EIO'); };
    expect(await request(env, BlkType.IN, 0, { len: 512, write: true })).toEqual({ status: BlkStatus.IOERR, len: 1 });
    served.readSync = real;
    expect((await request(env, BlkType.IN, 0, { len: 512, write: true })).status).toBe(BlkStatus.OK);
    await backend?.close();
    const ro = await device(true, true);
    const before = readFileSync(image);
    expect((await request(ro, BlkType.OUT, 0, { len: 512 })).status).toBe(BlkStatus.IOERR);
    expect(readFileSync(image)).toEqual(before);
    ro.d.publish(ro.d.chain([{ addr: HDR, len: 16 }]));
    ro.blk.notify(0);
    expect(ro.t.status & Status.DEVICE_NEEDS_RESET).toBe(Status.DEVICE_NEEDS_RESET);
  });

  it('answers GET_ID with the image name, and an unknown type with UNSUPP', async () => {
    const env = await device();
    expect(await request(env, BlkType.GET_ID, 0, { len: 20, write: true })).toEqual({ status: BlkStatus.OK, len: 21 });
    expect(new TextDecoder().decode(mem.read(gpa(DATA), 8))).toBe('disk.img');
    expect((await request(env, 99, 0, undefined)).status).toBe(BlkStatus.UNSUPP);
  });

  it('answers IOERR for a request past the end of the disk, and the image is untouched', async () => {
    const env = await device();
    const before = readFileSync(image);
    expect((await request(env, BlkType.IN, 127, { len: 1024, write: true })).status).toBe(BlkStatus.IOERR);
    expect((await request(env, BlkType.OUT, 128, { len: 512 })).status).toBe(BlkStatus.IOERR);
    expect((await request(env, BlkType.OUT, 2 ** 60, { len: 512 })).status).toBe(BlkStatus.IOERR);
    expect(readFileSync(image)).toEqual(before);
  });

  it('a read-only disk offers VIRTIO_BLK_F_RO and rejects writes with IOERR', async () => {
    const env = await device(true);
    env.t.write(MmioReg.DEVICE_FEATURES_SEL, 4, 0);
    expect(env.t.read(MmioReg.DEVICE_FEATURES, 4) & (1 << 5)).toBe(1 << 5);
    const before = readFileSync(image);
    mem.write(gpa(DATA), new Uint8Array(512).fill(0xcd));
    expect((await request(env, BlkType.OUT, 0, { len: 512 })).status).toBe(BlkStatus.IOERR);
    expect((await request(env, BlkType.IN, 0, { len: 512, write: true })).status).toBe(BlkStatus.OK);
    expect(readFileSync(image)).toEqual(before);
  });

  it('a failing host I/O becomes IOERR, never an exception', async () => {
    const env = await device();
    const failing = backend!;
    (failing as { read: BlockBackend['read'] }).read = () => Promise.reject(new Error('EIO'));
    expect((await request(env, BlkType.IN, 0, { len: 512, write: true })).status).toBe(BlkStatus.IOERR);
  });

  it('a request without a status byte breaks the device (DEVICE_NEEDS_RESET), not tsvmm', async () => {
    const env = await device();
    env.d.publish(env.d.chain([{ addr: HDR, len: 16 }]));
    env.blk.notify(0);
    await until(() => (env.t.status & Status.DEVICE_NEEDS_RESET) !== 0);
    expect(env.d.usedIdx()).toBe(0);
  });

  it('quiesce() waits for requests in flight; after a reset a late completion writes nothing', async () => {
    const env = await device();
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const real = backend!.read.bind(backend);
    (backend as { read: BlockBackend['read'] }).read = async (buf, off) => { await gate; return real(buf, off); };
    const header = new DataView(new ArrayBuffer(16));
    mem.write(gpa(HDR), new Uint8Array(header.buffer));
    env.d.publish(env.d.chain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, write: true }, { addr: STATUS_AT, len: 1, write: true }]));
    env.blk.notify(0);
    expect(env.blk.requestsInFlight).toBe(1);
    let drained = false;
    const q = env.blk.quiesce().then(() => { drained = true; });
    await new Promise((r) => setTimeout(r, 10));
    expect(drained).toBe(false);
    env.t.write(MmioReg.STATUS, 4, 0); // the driver resets the device meanwhile
    mem.fill(gpa(DATA), 512, 0x55);
    release();
    await q;
    expect(mem.read(gpa(DATA), 4)).toEqual(Uint8Array.of(0x55, 0x55, 0x55, 0x55));
    expect(env.d.usedIdx()).toBe(0);
  });

  it('migration: a pause drains the request in flight, the one still in the avail ring completes on the destination; each exactly once', async () => {
    const env = await device();
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const real = backend!.read.bind(backend);
    (backend as { read: BlockBackend['read'] }).read = async (buf, off) => { await gate; return real(buf, off); };
    const submit = (sector: number, data: number, status: number) => {
      const header = new DataView(new ArrayBuffer(16));
      header.setBigUint64(8, BigInt(sector), true);
      mem.write(gpa(HDR + sector * 16), new Uint8Array(header.buffer));
      return env.d.chain([{ addr: HDR + sector * 16, len: 16 }, { addr: data, len: 512, write: true }, { addr: status, len: 1, write: true }]);
    };
    const first = submit(1, DATA, STATUS_AT);
    env.d.publish(first);
    env.blk.notify(0); // popped: in flight on the source
    const drained = env.blk.quiesce(); // the migration's final pause
    const second = submit(2, DATA + 0x1000, STATUS_AT + 1);
    env.d.publish(second);
    env.blk.notify(0); // quiesced: stays in the avail ring
    release();
    await drained;
    expect(env.blk.requestsInFlight).toBe(0);
    const saved = JSON.parse(JSON.stringify(env.blk.state(), (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v)));
    saved.transport.config = Uint8Array.from(saved.transport.config);
    expect(saved.queues).toEqual([{ lastAvailIdx: 1, usedIdx: 1 }]);

    // The destination: the same guest memory (as migrated), a fresh device restored from the state.
    const t2 = new VirtioMmioTransport(createTransportState(blkIdentity(backend!)), { setLevel: () => {} }, () => {});
    (backend as { read: BlockBackend['read'] }).read = real;
    const dst = new VirtioBlk('virtio-blk@test', t2, mem, backend!);
    dst.restore(saved);
    dst.resume(); // the destination starts: serves what the avail ring still holds
    await until(() => env.d.usedIdx() === 2);
    expect(env.d.takeUsed()).toEqual([{ id: first, len: 513 }, { id: second, len: 513 }]);
    expect(mem.read(gpa(DATA + 0x1000), 512)).toEqual(new Uint8Array(readFileSync(image).subarray(1024, 1536)));
    expect(mem.read(gpa(STATUS_AT), 2)).toEqual(Uint8Array.of(BlkStatus.OK, BlkStatus.OK));
  });

  it('refuses a missing, unreadable or empty image with a DiskError naming it', async () => {
    await expect(FileBlockBackend.open(path.join(dir, 'nope.img'), false)).rejects.toThrow(/nope\.img: the image file does not exist/);
    await expect(FileBlockBackend.open(dir, false)).rejects.toBeInstanceOf(DiskError);
    const empty = path.join(dir, 'empty.img');
    writeFileSync(empty, '');
    await expect(FileBlockBackend.open(empty, false)).rejects.toThrow(/at least one 512-byte sector/);
    if (process.getuid?.() !== 0) {
      chmodSync(image, 0o400);
      await expect(FileBlockBackend.open(image, false)).rejects.toThrow(/not writable/);
    }
  });
});
