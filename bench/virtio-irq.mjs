#!/usr/bin/env node
// bench/virtio-irq: what raising a virtio interrupt costs the main thread, per interrupt, both ways the
// issue allows, against the floor of one eventfd write measured in the same run:
//   irq-line  KVM_IRQ_LINE level 1 then 0 on the device's GSI: tsvmm's level-triggered path (the
//             main thread raises on a used buffer, the vCPU lowers on InterruptACK)
//   irqfd     one 8-byte write to an eventfd bound to the GSI with KVM_IRQFD (KVM pulses the line
//             from a kernel worker; level semantics would further need a resamplefd round trip)
//   floor     one 8-byte write and read of an eventfd nothing listens to (two plain syscalls)
//
// Reproduce: npm install && node bench/virtio-irq.mjs [--count N]
//   (without /dev/kvm: scripts/nested-kvm/run.sh -- node bench/virtio-irq.mjs)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './bench-args.mjs';

const values = benchArgs(import.meta.url, { count: { type: 'string', default: '200000' } });
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (m) => import(path.join(root, 'dist', m));
const { addon } = await dist('kvm/addon.js');
const { Kvm } = await dist('kvm/kvm.js');
const { EFD_CLOEXEC } = await dist('kvm/constants.js');
const { VIRTIO_MMIO_GSI_BASE } = await dist('arch/x86/layout.js');
const { kvmAvailable } = await import(path.join(root, 'bench', 'kvm-available.mjs'));

const count = Number(values.count);
if (!kvmAvailable()) {
  console.error('bench/virtio-irq: cannot run: /dev/kvm is missing or not read-writable on this host');
  process.exit(4);
}

const native = addon();
const kvm = Kvm.open();
const vmFd = native.kvmCreateVm(kvm.fd, 0);
native.kvmCreateIrqchip(vmFd);
const gsiLine = VIRTIO_MMIO_GSI_BASE + 7;
const gsiFd = VIRTIO_MMIO_GSI_BASE + 6;
const irqfd = native.eventfd(0, EFD_CLOEXEC);
native.kvmIrqfd(vmFd, irqfd, gsiFd, 0, 0);
const plain = native.eventfd(0, EFD_CLOEXEC);
const one = new Uint8Array(new BigUint64Array([1n]).buffer);
const drain = new Uint8Array(8);

function time(label, body) {
  for (let i = 0; i < 1000; i++) body(); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) body();
  const ns = Number(process.hrtime.bigint() - t0) / count;
  return { label, ns };
}

const results = [
  time('floor (eventfd write + read)', () => {
    native.write(plain, one);
    native.read(plain, drain); // keep the counter from saturating
  }),
  time('irq-line (KVM_IRQ_LINE 1 + 0)', () => {
    native.kvmIrqLine(vmFd, gsiLine, 1);
    native.kvmIrqLine(vmFd, gsiLine, 0);
  }),
  time('irqfd (eventfd write)', () => native.write(irqfd, one)),
];
const floor = results[0].ns;
console.log(`bench/virtio-irq: ${count} interrupts each, main thread, ns per interrupt (ratio to the floor)`);
for (const r of results) console.log(`  ${r.label.padEnd(32)} ${r.ns.toFixed(0).padStart(7)} ns  ${(r.ns / floor).toFixed(2)}x`);
console.log('reproduce: node bench/virtio-irq.mjs --count ' + count);
native.close(irqfd);
native.close(plain);
native.close(vmFd);
kvm.close();
