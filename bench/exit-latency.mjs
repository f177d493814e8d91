#!/usr/bin/env node
// bench/exit-latency: nanoseconds per port-I/O exit handled by tsvmm's TypeScript path (the vCPU run
// loop: KVM_RUN, handleExit, the port bus, a device) against the same exits handled by a C loop in the
// addon (KVM_RUN and a port check, nothing else), on the same VM, vCPU and guest, in one run.
//
// Reproduce: npm install && node bench/exit-latency.mjs [--exits N]
import { openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './bench-args.mjs';

const values = benchArgs(import.meta.url, { exits: { type: 'string', default: '200000' }, rounds: { type: 'string', default: '10' } });
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (m) => import(path.join(root, 'dist', m));
const { addon } = await dist('kvm/addon.js');
const { Vm } = await dist('machine/vm.js');
const { buildBuses } = await dist('machine/board.js');
const { kvmRunView } = await dist('vcpu/exit-handler.js');
const { runLoop } = await dist('vcpu/run-loop.js');
const { createControlBlock } = await dist('vcpu/control-block.js');
const { kvmAvailable } = await import(path.join(root, 'bench', 'kvm-available.mjs'));

const exits = Number(values.exits);
/** The bench port of guests/pio-loop.c: no device of the board claims it. */
const BENCH_PORT = 0x400;

if (!kvmAvailable()) {
  console.error('bench/exit-latency: cannot run: /dev/kvm is missing or not read-writable on this host');
  process.exit(4);
}

// The guest does one OUT to the bench port per exit measured, plus slack; the rounds alternate the
// TypeScript path, a bare JS loop and the C loop, so a slow phase of the host (nested KVM on TCG
// drifts by 2x within a run) hits all three alike. The guest's "done" line on the UART ends it.
const rounds = Number(values.rounds);
const perRound = Math.ceil(exits / rounds);
const native = addon();
const vm = Vm.create({
  kernelPath: path.join(root, 'guests', 'build', 'pio-loop.elf'),
  memBytes: 64 << 20,
  cpus: 1,
  cmdline: `pio-loop count=${3 * perRound * rounds + 1}`,
  serialOutputFd: openSync('/dev/null', 'w'),
});
const fd = vm.vcpuFd(0);
const runBuffer = native.mmapShared(fd, vm.runMmapSize, 0);
const run = kvmRunView(runBuffer);

// A device on the bench port that counts writes and asks the loop to stop at a target, so the
// TypeScript figure includes the whole real path: bus lookup, device call, stop check.
let seen = 0;
let target = 1;
let stop;
const buses = buildBuses(vm.board, { requestStop: (s) => { stop ??= s; }, transmit: () => {} });
buses.pio.register(BENCH_PORT, 4, {
  read: () => 0xffffffff,
  write: () => { if (++seen === target) stop = { kind: 'poweroff' }; },
}, 'bench counter');
const ctl = createControlBlock();
const takeStop = () => { const s = stop; stop = undefined; return s; };

runLoop(native, fd, run, buses, ctl, takeStop); // boot, serial init, first bench OUT
const { KvmRunOffset: R } = await import(path.join(root, 'dist', 'kvm', 'kvm-run.js'));
const EXIT_IO = 2;
const time = (f) => {
  const t0 = process.hrtime.bigint();
  const n = f();
  return { ns: Number(process.hrtime.bigint() - t0), n };
};
const totals = { ts: 0, bare: 0, c: 0 };
const ratios = [];
for (let round = 0; round < rounds; round++) {
  seen = 0;
  target = perRound;
  const ts = time(() => { runLoop(native, fd, run, buses, ctl, takeStop); return seen; });
  // The floor for any JS run loop: KVM_RUN through the addon and the exit's reason and port read, nothing else.
  const bare = time(() => {
    let n = 0;
    while (n < perRound && native.kvmRun(fd) === 0 && run.view.getUint32(R.EXIT_REASON, true) === EXIT_IO
      && run.view.getUint16(R.IO_PORT, true) === BENCH_PORT) n++;
    return n;
  });
  const c = time(() => native.benchCountPioExits(fd, runBuffer, BENCH_PORT, perRound));
  if (ts.n !== perRound || bare.n !== perRound || c.n !== perRound) {
    console.error(`bench/exit-latency: round ${round}: the loops saw ${ts.n}, ${bare.n} and ${c.n} exits, expected ${perRound} each`);
    process.exit(1);
  }
  totals.ts += ts.ns;
  totals.bare += bare.ns;
  totals.c += c.ns;
  ratios.push(ts.ns / c.ns);
}
native.munmap(runBuffer);
vm.dispose();

const n = perRound * rounds;
const median = [...ratios].sort((x, y) => x - y)[Math.floor(ratios.length / 2)];
console.log(`exit-latency: ${n} port-I/O exits per loop (outl to port 0x${BENCH_PORT.toString(16)}, guests/build/pio-loop.elf), ${rounds} alternating rounds`);
console.log(`  TypeScript run loop : ${(totals.ts / n).toFixed(0)} ns/exit`);
console.log(`  bare JS loop        : ${(totals.bare / n).toFixed(0)} ns/exit  (kvmRun + reason/port check only: the floor for any JS loop)`);
console.log(`  C loop in the addon : ${(totals.c / n).toFixed(0)} ns/exit  (baseline)`);
console.log(`  ratio TypeScript / C: ${(totals.ts / totals.c).toFixed(3)} overall, median of rounds ${median.toFixed(3)}, range ${Math.min(...ratios).toFixed(3)}-${Math.max(...ratios).toFixed(3)}  (target <= 1.10)`);
console.log(`  ratio bare JS / C   : ${(totals.bare / totals.c).toFixed(3)}`);
console.log(`  reproduce: node bench/exit-latency.mjs --exits ${exits} --rounds ${rounds}`);
