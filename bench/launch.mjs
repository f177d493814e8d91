#!/usr/bin/env node
// bench/launch: wall time from process start to exit of `tsvmm run guests/build/hello.elf`, against
// QEMU microvm booting the same guest with KVM, measured alternately in one run (median of N each).
//
// Reproduce: npm install && node bench/launch.mjs [--runs N]
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kvmAvailable } from './kvm-available.mjs';
import { TRACE_ENV, milestones, parsePhases } from './phase-trace.mjs';
import { benchArgs } from './bench-args.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const values = benchArgs(import.meta.url, { runs: { type: 'string', default: '20' } });
const runs = Number(values.runs);
const hello = path.join(root, 'guests', 'build', 'hello.elf');

if (!kvmAvailable()) {
  console.error('bench/launch: cannot run: /dev/kvm is missing or not read-writable on this host');
  process.exit(4);
}

const tsvmm = [process.execPath, [path.join(root, 'bin', 'tsvmm.cjs'), 'run', hello]];
const qemu = ['qemu-system-x86_64', [
  '-enable-kvm', '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-nodefaults', '-no-user-config',
  '-display', 'none', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-kernel', hello,
]];
const haveQemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;

function time([cmd, args], env = process.env) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0 || !r.stdout.includes('Hello from a tsvmm guest!')) {
    throw new Error(`${cmd} failed (status ${r.status}): ${r.stderr.trim()}`);
  }
  return { ms, stderr: r.stderr };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ours = [];
const theirs = [];
time(tsvmm); // warm the page cache
if (haveQemu) time(qemu);
for (let i = 0; i < runs; i++) {
  ours.push(time(tsvmm).ms);
  if (haveQemu) theirs.push(time(qemu).ms);
}
console.log(`launch: hello.elf from exec to exit, median of ${runs}`);
console.log(`  tsvmm run : ${median(ours).toFixed(1)} ms`);
console.log(`  node -e 0 : ${median(Array.from({ length: 5 }, () => time([process.execPath, ['-e', "console.log('Hello from a tsvmm guest!')"]]).ms)).toFixed(1)} ms  (Node's own start, included above)`);
// One more run, not in the median, with TSVMM_TRACE_PHASES=1: where tsvmm's time goes.
const traced = time(tsvmm, TRACE_ENV);
console.log(`  one traced tsvmm run (${traced.ms.toFixed(0)} ms), ms since its start: ${milestones(parsePhases(traced.stderr))}`);
if (haveQemu) {
  console.log(`  QEMU      : ${median(theirs).toFixed(1)} ms  (baseline: qemu-system-x86_64 -enable-kvm -M microvm)`);
  console.log(`  ratio tsvmm / QEMU: ${(median(ours) / median(theirs)).toFixed(2)}  (target <= 1.0)`);
} else {
  console.log('  QEMU      : skipped: qemu-system-x86_64 is not installed (apt install qemu-system-x86)');
}
console.log(`  reproduce: node bench/launch.mjs --runs ${runs}`);
