#!/usr/bin/env node
// bench/migrate-stream: tsvmm's migration stream without KVM, so it runs on any host: a source process
// encodes a guest RAM image into RAM records (zero-page detection, copy, the stream checksum) and
// writes them to a destination process over loopback TCP, which checks and applies them to its own
// GuestMemory (receiveMigration, as `tsvmm run --incoming` does), against the loopback limit measured
// in the same run (the same two processes pushing the same number of bytes, nothing else done).
// It isolates the part of bench/migrate that is ours per byte; bench/migrate measures the whole thing
// on KVM against QEMU.
//
// Reproduce: npm install && node bench/migrate-stream.mjs [--mib 1024] [--runs 3]
import { fork } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { holdHostMemory } from './host-memory.mjs';
import { benchArgs } from './bench-args.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (m) => import(path.join(root, 'dist', m));
const values = benchArgs(import.meta.url, { mib: { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' }, role: { type: 'string' }, mode: { type: 'string' }, port: { type: 'string' } });
const MiB = 2 ** 20;
const bytes = Number(values.mib) * MiB;
const PAGE = 4096;

const { GuestMemory } = await dist('memory/guest-memory.js');
const { gpa } = await dist('arch/x86/layout.js');

function shapeOf(memory) {
  return { memBytes: bytes, cpus: 1, regions: memory.regions.map((r) => ({ start: r.start, sizeBytes: r.sizeBytes })), devices: [] };
}

if (values.role === 'receiver') {
  // The destination: accepts one connection, then either applies a migration stream or just drains.
  // Both modes take the connection as `tsvmm run --incoming` does (listenForMigration, then bulkReads
  // for plain TCP), so the loopback limit is read the same cheapest way as the stream.
  const { listenForMigration, bulkReads, readChunks } = await dist('migration/transport.js');
  const probe = net.createServer();
  const port = await new Promise((resolve) => probe.listen(0, '127.0.0.1', () => { const p = probe.address().port; probe.close(() => resolve(p)); }));
  const listener = await listenForMigration(`tcp:127.0.0.1:${port}`);
  process.send({ port: listener.port });
  const memory = values.mode === 'stream' ? GuestMemory.create(bytes) : undefined;
  const socket = bulkReads(await listener.connection);
  socket.on('close', () => process.exit(0));
  if (values.mode === 'stream') {
    const { receiveMigration } = await dist('migration/incoming.js');
    await receiveMigration({ memory, shape: () => shapeOf(memory), restoreState: () => {} }, socket);
  } else {
    let got = 0;
    readChunks(socket, (c) => {
      got += c.length;
      if (got === bytes) socket.end('x');
    });
  }
} else {
  const { encodeRamRecord, BATCH_PAGES, RecordBufferPool } = await dist('migration/ram-record.js');
  const { StreamChecksum } = await dist('migration/stream-checksum.js');
  const { endRecord, headerRecord, record, stateRecord, u32Record, RecordReader, RecordType } = await dist('migration/protocol.js');
  // Every page holds data the way the dirtier's do: a stamp at its start, zeros after.
  const memory = GuestMemory.create(bytes);
  const stamp = Buffer.alloc(16);
  for (let page = 0; page < bytes / PAGE; page++) {
    stamp.writeBigUInt64LE(BigInt(page + 1), 0);
    memory.write(gpa(memory.regions[0].start + page * PAGE), stamp);
  }

  const start = async (mode) => {
    const child = fork(fileURLToPath(import.meta.url), ['--role', 'receiver', '--mode', mode, '--mib', values.mib], { stdio: 'inherit', execArgv: process.execArgv });
    const { port } = await new Promise((resolve) => child.once('message', resolve));
    const socket = await new Promise((resolve) => { const s = net.connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(s)); });
    return { child, socket };
  };
  const write = (socket, buf) => (socket.write(buf) ? undefined : new Promise((resolve) => socket.once('drain', resolve)));
  const done = (socket) => new Promise((resolve) => socket.once('data', resolve));

  async function loopback() {
    const { child, socket } = await start('raw');
    const chunk = Buffer.alloc(MiB, 1);
    const t0 = performance.now();
    for (let sent = 0; sent < bytes; sent += MiB) await write(socket, chunk);
    await done(socket);
    const ms = performance.now() - t0;
    socket.destroy();
    await new Promise((resolve) => child.once('exit', resolve));
    return ms;
  }

  async function stream() {
    // The receiver writes its guest memory into memory just freed, every run alike (host-memory.mjs).
    const warm = await holdHostMemory(Math.ceil(1.1 * bytes));
    const { child, socket } = await start('stream');
    await warm.release();
    const checksum = new StreamChecksum();
    const answers = new RecordReader();
    const loaded = new Promise((resolve, reject) => socket.on('data', (d) => {
      answers.push(d);
      for (let r = answers.next(); r !== undefined; r = answers.next()) {
        if (r.type === RecordType.LOADED) resolve();
        else if (r.type !== RecordType.ACCEPTED) reject(new Error(`the destination answered record type ${r.type}`));
      }
    }));
    const send = (buf, written) => {
      checksum.update(buf);
      return socket.write(buf, written) ? undefined : new Promise((resolve) => socket.once('drain', resolve));
    };
    // Record buffers reused as PrecopySender does: a fresh 1 MiB buffer per record is a page fault per 4 KiB.
    const pool = new RecordBufferPool();
    const t0 = performance.now();
    await send(headerRecord(shapeOf(memory)));
    let wire = 0;
    for (let r = 0; r < memory.regions.length; r++) {
      const region = memory.regions[r];
      const pages = region.sizeBytes / PAGE;
      for (let first = 0; first < pages; first += BATCH_PAGES) {
        const batch = Array.from({ length: Math.min(BATCH_PAGES, pages - first) }, (_, i) => first + i);
        const into = pool.take();
        const rec = encodeRamRecord(r, region.bytes, batch, { zero: 0, data: 0 }, [], into);
        wire += rec.length;
        await send(rec, () => pool.give(into));
        // As PrecopySender.sendBatch: a turn of the event loop per batch. Without it a socket that
        // takes every write at once never runs the write callbacks (they wait for the next tick),
        // no buffer comes back to the pool, and every record faults in a fresh 1 MiB.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await send(u32Record(RecordType.PASS_END, 1));
    await send(stateRecord('vm', {}));
    await write(socket, endRecord(checksum.bytes, checksum.value));
    await loaded; // not the ACCEPTED that came first
    const ms = performance.now() - t0;
    // As PrecopySender: COMMIT answers LOADED (the destination would not run a guest without it).
    await new Promise((resolve) => socket.end(record(RecordType.COMMIT, new Uint8Array(0)), resolve));
    socket.destroy();
    await new Promise((resolve) => child.once('exit', resolve));
    return { ms, wire };
  }

  // What any destination pays before its RAM holds a byte: faulting in guest memory, here in memory
  // just freed, as the stream's receiver gets it, and in memory free for a while (on a host that is
  // itself a VM, handed back to the hypervisor by then: this alone can exceed the whole transfer).
  function firstTouch() {
    const fresh = GuestMemory.create(bytes);
    const t0 = performance.now();
    fresh.fill(gpa(fresh.regions[0].start), bytes, 0x5a);
    const ms = performance.now() - t0;
    fresh.dispose();
    return ms;
  }
  async function firstTouchJustFreed() {
    const warm = await holdHostMemory(Math.ceil(1.1 * bytes));
    await warm.release();
    return firstTouch();
  }
  async function firstTouchLongFree() {
    await new Promise((resolve) => setTimeout(resolve, 5000));
    return firstTouch();
  }

  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const raw = [];
  const ours = [];
  const touchWarm = [];
  const touchCold = [];
  let wire = 0;
  for (let i = 0; i < Number(values.runs); i++) {
    touchWarm.push(await firstTouchJustFreed());
    touchCold.push(await firstTouchLongFree());
    raw.push(await loopback());
    const s = await stream();
    ours.push(s.ms);
    wire = s.wire;
  }
  const rate = (ms, n) => (n / MiB / (ms / 1000)).toFixed(0);
  console.log(`migrate-stream: ${values.mib} MiB of guest RAM (every page data), median of ${values.runs}`);
  console.log(`  loopback TCP, raw bytes:   ${median(raw).toFixed(0).padStart(7)} ms  ${rate(median(raw), bytes).padStart(6)} MiB/s`);
  console.log(`  tsvmm stream (RAM pass):   ${median(ours).toFixed(0).padStart(7)} ms  ${rate(median(ours), bytes).padStart(6)} MiB/s of RAM (${(wire / MiB).toFixed(0)} MiB on the wire)`);
  console.log(`  RAM first touch, memory just freed (as the stream's receiver has it): ${median(touchWarm).toFixed(0).padStart(6)} ms  ${rate(median(touchWarm), bytes).padStart(6)} MiB/s`);
  console.log(`  RAM first touch, memory free for 5 s:                                 ${median(touchCold).toFixed(0).padStart(6)} ms  ${rate(median(touchCold), bytes).padStart(6)} MiB/s`);
  console.log('    (GuestMemory.create and fill, the same bytes: what a destination pays before any stream; on a host that is a VM, memory free for a while costs a hypervisor fault per page)');
  console.log(`  ratio: ${(median(raw) / median(ours)).toFixed(2)} of the loopback limit (target >= 0.70, as bench/migrate's)`);
  console.log(`  reproduce: node bench/migrate-stream.mjs --mib ${values.mib} --runs ${values.runs}`);
}
