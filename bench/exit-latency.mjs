#!/usr/bin/env node
// bench/exit-latency: nanoseconds per port-I/O exit handled by tsvmm's TypeScript path (the vCPU run
// loop: KVM_RUN, handleExit, the port bus, a device) against the same exits handled by a C loop in the
// addon (KVM_RUN and a port check, nothing else), on the same VM, vCPU and guest, in one run.
//
// Reproduce: npm install && node bench/exit-latency.mjs [--exits N]
import { openSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (m) => import(path.join(root, 'dist', m));
const { addon } = await dist('kvm/addon.js');
const { Vm } = await dist('machine/vm.js');
const { buildBuses } = await dist('machine/board.js');
const { kvmRunView } = await dist('vcpu/exit-handler.js');
const { runLoop } = await dist('vcpu/run-loop.js');
const { createControlBlock } = await dist('vcpu/control-block.js');
const { kvmAvailable } = await import(path.join(root, 'bench', 'kvm-available.mjs'));

const { values } = parseArgs({ options: { exits: { type: 'string', default: '200000' } } });
const exits = Number(values.exits);
/** The bench port of guests/pio-loop.c: no device of the board claims it. */
const BENCH_PORT = 0x400;

if (!kvmAvailable()) {
  console.error('bench/exit-latency: cannot run: /dev/kvm is missing or not read-writable on this host');
  process.exit(4);
}

// The guest does 2N + 1 OUTs to the bench port; the TypeScript path takes the first N (after one to
// warm up), the C loop the next N, and the rest end with the guest's "done" line on the UART.
const native = addon();
const vm = Vm.create({
  kernelPath: path.join(root, 'guests', 'build', 'pio-loop.elf'),
  memBytes: 64 << 20,
  cpus: 1,
  cmdline: `pio-loop count=${2 * exits + 1}`,
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
seen = 0;
target = exits;
let t0 = process.hrtime.bigint();
runLoop(native, fd, run, buses, ctl, takeStop);
const tsNs = Number(process.hrtime.bigint() - t0);

t0 = process.hrtime.bigint();
const cCount = native.benchCountPioExits(fd, runBuffer, BENCH_PORT);
const cNs = Number(process.hrtime.bigint() - t0);
native.munmap(runBuffer);
vm.dispose();

if (cCount < exits) {
  console.error(`bench/exit-latency: the C loop saw ${cCount} exits, expected ${exits}`);
  process.exit(1);
}
const tsPer = tsNs / exits;
const cPer = cNs / cCount;
console.log(`exit-latency: ${exits} port-I/O exits each (outl to port 0x${BENCH_PORT.toString(16)}, guests/build/pio-loop.elf)`);
console.log(`  TypeScript run loop : ${tsPer.toFixed(0)} ns/exit`);
console.log(`  C loop in the addon : ${cPer.toFixed(0)} ns/exit  (baseline)`);
console.log(`  ratio TypeScript / C: ${(tsPer / cPer).toFixed(3)}  (target <= 1.10)`);
console.log(`  reproduce: node bench/exit-latency.mjs --exits ${exits}`);
