#!/usr/bin/env node
// bench/virtio: the same guests under tsvmm and under QEMU 7.2 microvm (both on KVM), in one run:
//   block  diskcheck writes then reads back a whole image with 4 KiB and 64 KiB requests (depth 8),
//          1 + 6 and 1 + 16 passes; MB/s = 2 x image x timed passes / time from the guest's first
//          "diskcheck: pass" line to its last, as the console delivers them. (Subtracting the wall
//          time of a second, one-request boot, as this did before, drowned in start-up jitter: in
//          nested KVM tsvmm's start varies by seconds.)
//   net    netecho over the udp backend (QEMU: -netdev dgram); one request in flight at a time;
//          round trips per second over --trips, after --warmup untimed ones
// and prints tsvmm's figure as a ratio to QEMU's (target >= 1.0x). Each row alternates QEMU and tsvmm
// for --rounds rounds (default 3) and reports the medians and each round's ratio: in nested KVM one
// VMM's own figure varies by up to 2x from run to run, so a single pair says little.
//
// Both VMMs run the same untimed warm-up (the first pass, the first trips): the figure is the steady
// exchange. tsvmm's device code runs in V8, which compiles it while it runs: over the first ~0.3 s of
// I/O its CPU per request is higher (on kvm_pvm, 2000 UDP trips timed from the first reply cost V8's
// compiler threads ~20 us of CPU per trip, 20000 trips ~1 us), a one-time cost per device that a
// short timed window would count as throughput. So that it stays in view, each row is followed by
// its warm-up's own figures (the first pass from the guest's "diskcheck: id=" line; the warm-up trips
// from the first reply).
//
// The disk images live in the temporary directory (TMPDIR): a local file system measures the VMMs, a
// network one (the nested-KVM VM's /tmp is 9p) mostly how many requests each keeps in flight.
//
// Reproduce: npm install && node bench/virtio.mjs [--mib 16] [--trips 20000] [--warmup 2000] [--rounds 3] [--only block|UDP]
//   (without /dev/kvm: scripts/nested-kvm/run.sh -- env TMPDIR=/dev/shm node bench/virtio.mjs; nested
//    figures are dominated by emulation and say little about bare-metal speed, and vary from run to
//    run by up to 2x for QEMU too: alternate builds in one boot to compare them)
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './bench-args.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { kvmAvailable } = await import(path.join(root, 'bench', 'kvm-available.mjs'));
const values = benchArgs(import.meta.url, {
  mib: { type: 'string', default: '16' }, trips: { type: 'string', default: '20000' }, warmup: { type: 'string', default: '2000' }, only: { type: 'string' },
  rounds: { type: 'string', default: '3' },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`bench/virtio: --rounds '${values.rounds}' is not a positive whole number`);
  process.exit(2);
}
const imageBytes = Number(values.mib) * 1024 * 1024;
const trips = Number(values.trips);
const warmup = Number(values.warmup);
if (!Number.isInteger(trips) || trips < 1 || !Number.isInteger(warmup) || warmup < 0) {
  console.error(`bench/virtio: --trips '${values.trips}' and --warmup '${values.warmup}' take whole numbers (trips at least 1)`);
  process.exit(2);
}
if (!kvmAvailable()) {
  console.error('bench/virtio: cannot run: /dev/kvm is missing or not read-writable on this host');
  process.exit(4);
}

const guest = (name) => path.join(root, 'guests', 'build', `${name}.elf`);
const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-bench-virtio-'));
const MAC = '52:54:00:12:34:56';

const vmms = {
  tsvmm: {
    argv: (kernel, dev, append) => [process.execPath, path.join(root, 'bin', 'tsvmm.cjs'), 'run', kernel, '--mem', '256M', ...dev.tsvmm, '--cmdline', append],
  },
  qemu: {
    argv: (kernel, dev, append) => ['qemu-system-x86_64', '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off,ioapic2=off', '-accel', 'kvm',
      '-m', '256M', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio',
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-global', 'virtio-mmio.force-legacy=false', ...dev.qemu,
      '-kernel', kernel, '-append', append],
  },
};

/** Starts argv; resolves the child with its console text accumulating in .out. */
function start(argv) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  child.out = '';
  child.stdout.on('data', (d) => { child.out += d; });
  child.stderr.on('data', (d) => { child.out += d; });
  child.done = new Promise((resolve) => child.on('close', (status) => resolve(status)));
  return child;
}

/**
 * MB/s of diskcheck over `passes` timed passes (`rate`), after one untimed warm-up pass, whose own MB/s
 * (from the guest's "diskcheck: id=" line, set up, to its first pass line) is `warmUp`.
 */
async function blockMBps(vmm, reqBytes, passes) {
  const img = path.join(dir, `${vmm}.img`);
  writeFileSync(img, Buffer.alloc(0));
  writeFileSync(img, Buffer.alloc(imageBytes));
  const dev = { tsvmm: ['--disk', img], qemu: ['-drive', `if=none,id=d0,file=${img},format=raw`, '-device', 'virtio-blk-device,drive=d0'] };
  const argv = vmms[vmm].argv(guest('diskcheck'), dev, `run=1 passes=${1 + passes} req=${reqBytes} depth=8`);
  const child = start(argv);
  let setUp;
  let firstPass;
  let lastPass;
  let seen = 0;
  child.stdout.on('data', () => {
    const now = performance.now();
    if (setUp === undefined && child.out.includes('diskcheck: id=')) setUp = now;
    const count = child.out.split('diskcheck: pass ').length - 1;
    if (count > seen) {
      if (seen === 0) firstPass = now;
      seen = count;
      lastPass = now;
    }
  });
  const status = await child.done;
  if (status !== 33 || setUp === undefined || seen !== 1 + passes) throw new Error(`${vmm} diskcheck exited ${status} after ${seen} of ${1 + passes} passes: ${child.out.slice(-400)}`);
  return { rate: (2 * imageBytes * passes) / 1e6 / ((lastPass - firstPass) / 1000), warmUp: (2 * imageBytes) / 1e6 / ((firstPass - setUp) / 1000) };
}

function udpFrame(srcMac, dstMac, payload) {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45; ip.writeUInt16BE(20 + 8 + payload.length, 2); ip[8] = 64; ip[9] = 17;
  Buffer.from([10, 0, 2, 2]).copy(ip, 12); Buffer.from([10, 0, 2, 15]).copy(ip, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(40000, 0); udp.writeUInt16BE(7, 2); udp.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([dstMac, srcMac, Buffer.from([0x08, 0x00]), ip, udp, payload]);
}

/** Round trips per second over `trips` timed ones (`rate`), and over the `warmup` before them (`warmUp`, from the first reply). */
async function udpTripsPerSecond(vmm) {
  const peer = createSocket('udp4');
  await new Promise((r) => peer.bind(0, '127.0.0.1', r));
  const vmPort = await new Promise((r) => { const s = createSocket('udp4'); s.bind(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
  const dev = {
    tsvmm: ['--net', `udp,local=127.0.0.1:${vmPort},remote=127.0.0.1:${peer.address().port},mac=${MAC}`],
    qemu: ['-netdev', `dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${vmPort},remote.type=inet,remote.host=127.0.0.1,remote.port=${peer.address().port}`,
      '-device', `virtio-net-device,netdev=n0,mac=${MAC}`],
  };
  const child = start(vmms[vmm].argv(guest('netecho'), dev, 'ip=10.0.2.15 port=7'));
  while (!child.out.includes('netecho: ready')) {
    if (child.exitCode !== null) throw new Error(`${vmm} netecho ended: ${child.out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const guestMac = Buffer.from(MAC.split(':').map((h) => parseInt(h, 16)));
  const ourMac = Buffer.from([2, 0, 0, 0, 0, 2]);
  let replies = 0;
  let onReply = () => {};
  peer.on('message', (m) => { if (m.length >= 42 && m.readUInt16BE(12) === 0x0800 && m[23] === 17) { replies++; onReply(); } });
  // A request with no reply within a second is sent again (and counted): the figure stays honest
  // and the run does not stall on one lost frame.
  let resends = 0;
  let resend;
  const send = () => {
    clearTimeout(resend);
    resend = setTimeout(() => { resends++; send(); }, 1000);
    peer.send(udpFrame(ourMac, guestMac, Buffer.alloc(16)), vmPort, '127.0.0.1');
  };
  let t0 = performance.now();
  let first = t0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${vmm}: only ${replies} of ${warmup + trips} replies; console: ${child.out}`)), 300_000);
    onReply = () => {
      // The clock starts at the last warm-up reply (the first, without warm-up): what is measured is
      // the steady exchange, not start-up.
      if (replies === 1) first = performance.now();
      if (replies === Math.max(1, warmup)) t0 = performance.now();
      if (replies < Math.max(1, warmup) + trips) return send();
      clearTimeout(timer);
      clearTimeout(resend);
      resolve();
    };
    send();
  });
  if (resends > 0) console.log(`  (${vmm}: ${resends} requests resent after 1 s without a reply)`);
  const rate = trips / ((performance.now() - t0) / 1000);
  const warmUp = warmup > 1 ? (warmup - 1) / ((t0 - first) / 1000) : undefined;
  child.stdin.write('q');
  await child.done;
  peer.close();
  return { rate, warmUp };
}

const rows = [];
try {
  for (const [label, run] of [
    // Enough passes that the sweep, not the boot's jitter, dominates the wall time.
    ['block 4 KiB requests, MB/s', (v) => blockMBps(v, 4096, 6)],
    ['block 64 KiB requests, MB/s', (v) => blockMBps(v, 65536, 16)],
    ['UDP round trips per second', (v) => udpTripsPerSecond(v)],
  ]) {
    if (values.only !== undefined && !label.startsWith(values.only)) continue;
    const pairs = [];
    for (let r = 0; r < rounds; r++) pairs.push({ qemu: await run('qemu'), tsvmm: await run('tsvmm') });
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const tsvmm = median(pairs.map((p) => p.tsvmm.rate));
    const qemu = median(pairs.map((p) => p.qemu.rate));
    rows.push({ label, tsvmm, qemu });
    const each = pairs.map((p) => `${p.tsvmm.rate.toFixed(1)}/${p.qemu.rate.toFixed(1)}=${(p.tsvmm.rate / p.qemu.rate).toFixed(2)}`).join(', ');
    console.log(`  ${label.padEnd(30)} tsvmm ${tsvmm.toFixed(1).padStart(9)}   qemu ${qemu.toFixed(1).padStart(9)}   ${(tsvmm / qemu).toFixed(2)}x   (medians of ${rounds}; rounds tsvmm/qemu: ${each})`);
    // The untimed warm-up too, so what it left out stays in view (tsvmm's V8 compiles its device path then).
    if (pairs.every((p) => p.tsvmm.warmUp !== undefined && p.qemu.warmUp !== undefined)) {
      const tw = median(pairs.map((p) => p.tsvmm.warmUp));
      const qw = median(pairs.map((p) => p.qemu.warmUp));
      console.log(`  ${'  its untimed warm-up'.padEnd(30)} tsvmm ${tw.toFixed(1).padStart(9)}   qemu ${qw.toFixed(1).padStart(9)}   ${(tw / qw).toFixed(2)}x`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`bench/virtio: image ${values.mib} MiB, one untimed pass then 6 (4 KiB) or 16 (64 KiB) timed; ${warmup} untimed then ${trips} timed round trips; reproduce: node bench/virtio.mjs --mib ${values.mib} --trips ${trips} --warmup ${warmup} --rounds ${rounds}`);
