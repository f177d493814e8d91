#!/usr/bin/env node
// bench/linux-banner: wall time from exec to the kernel's "Linux version" banner on the serial console,
// booting the same kernel with the same command line under tsvmm and under QEMU's microvm with KVM,
// alternately in one run (median of N each), and the ratio. Also splits tsvmm's time into Node's own
// start, reading the kernel file, and the rest (building the VM and the guest running to its banner).
//
// tsvmm unpacks a bzImage's compressed kernel on the host and caches the vmlinux (src/boot/kernel-
// payload.ts); the guest's own decompressor is skipped. The bench gives tsvmm a fresh cache, reports the
// first (cold) boot, which unpacks, apart from the warm ones it takes the median of, and for the whole
// picture also times tsvmm with --kernel-decompress guest and QEMU booting the vmlinux tsvmm unpacked.
//
// Reproduce: node bench/linux-banner.mjs [--kernel /boot/vmlinuz-...|vmlinux] [--runs N] [--timeout SECONDS]
//   (no /dev/kvm here? scripts/nested-kvm/run.sh -- node bench/linux-banner.mjs ...)
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kvmAvailable, kvmIsPvm } from './kvm-available.mjs';
import { TRACE_ENV, milestones, parsePhases, phaseMs } from './phase-trace.mjs';
import { benchArgs } from './bench-args.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const values = benchArgs(import.meta.url, {
  runs: { type: 'string', default: '3' }, kernel: { type: 'string' }, mem: { type: 'string', default: '512M' }, timeout: { type: 'string', default: '900' },
});
const runs = Number(values.runs);
const kernel = values.kernel ?? (() => {
  const found = readdirSync('/boot').filter((f) => /^vmlinuz-.*-amd64$/.test(f)).sort();
  if (found.length === 0) {
    console.error('bench/linux-banner: no /boot/vmlinuz-*-amd64: apt-get install linux-image-amd64, or pass --kernel');
    process.exit(2);
  }
  return `/boot/${found.at(-1)}`;
})();
const cmdline = 'console=ttyS0 earlyprintk=ttyS0';
/**
 * How long one boot may take to its banner. A boot that takes longer is stopped and counts as this
 * long, printed as a bound ("> N s"): on kvm_pvm QEMU's bzImage boot runs the xz decompressor emulated
 * and had not reached its banner after 15 minutes.
 */
const TIMEOUT_MS = Number(values.timeout) * 1000;
if (!(TIMEOUT_MS > 0)) {
  console.error(`bench/linux-banner: --timeout wants seconds, not '${values.timeout}'`);
  process.exit(2);
}

if (!kvmAvailable()) {
  console.error('bench/linux-banner: cannot run: /dev/kvm is missing or not read-writable on this host (try scripts/nested-kvm/run.sh -- node bench/linux-banner.mjs)');
  process.exit(4);
}

const tsvmmRun = (...extra) => [process.execPath, [path.join(root, 'bin', 'tsvmm.cjs'), 'run', '--kernel', kernel, '--mem', values.mem, '--cmdline', cmdline, ...extra]];
const tsvmm = tsvmmRun();
const tsvmmGuestUnpacks = tsvmmRun('--kernel-decompress', 'guest');
/**
 * kvm_pvm (guest CPL0 emulated, CPL3 native) refuses QEMU's -cpu host (its MSR 0x10a write fails and
 * QEMU aborts), and at its ~2 million instructions per second a guest-side decompressor takes minutes:
 * there QEMU runs its default CPU model and tsvmm's --kernel-decompress guest runs are left out.
 */
const kvmPvm = kvmIsPvm();
const qemuWith = (k) => ['qemu-system-x86_64', [
  '-enable-kvm', ...(kvmPvm ? [] : ['-cpu', 'host']), '-M', 'microvm,isa-serial=on', '-nodefaults', '-no-user-config', '-display', 'none',
  '-serial', 'stdio', '-m', values.mem, '-kernel', k, '-append', cmdline,
]];
const qemu = qemuWith(kernel);
const cacheDir = mkdtempSync(path.join(tmpdir(), 'tsvmm-bench-cache-'));
process.on('exit', () => rmSync(cacheDir, { recursive: true, force: true }));
const tsvmmEnv = { ...TRACE_ENV, TSVMM_CACHE_DIR: cacheDir };
const haveQemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;

/**
 * Milliseconds from exec until "Linux version" appears on the child's stdout (the child is then
 * killed), and what the child wrote to stderr by then; a boot with no banner after TIMEOUT_MS is
 * stopped and resolves with that time and timedOut.
 */
function timeToBanner([cmd, args], env = process.env) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    let stopped = false;
    const timer = setTimeout(() => {
      stopped = true;
      child.kill('SIGKILL');
      resolve({ ms: TIMEOUT_MS, stderr: err, timedOut: true });
    }, TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      out += d.toString();
      if (out.includes('Linux version')) {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve({ ms, stderr: err });
      }
    });
    child.stderr.on('data', (d) => { err += d.toString(); });
    child.on('close', (status) => {
      clearTimeout(timer);
      if (!out.includes('Linux version') && !stopped) reject(new Error(`${cmd} ended (status ${status}) before the banner: ${err.trim().slice(-400)}`));
    });
  });
}

function timeSync([cmd, args]) {
  const t0 = process.hrtime.bigint();
  spawnSync(cmd, args);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** A time, or its lower bound when the boot was stopped at the timeout. */
const secs = (ms) => `${ms >= TIMEOUT_MS ? '> ' : ''}${(ms / 1000).toFixed(2)}`;
const ours = [];
const oursGuestUnpacks = [];
const theirs = [];
const theirsVmlinux = [];
// The first boot with an empty cache unpacks the kernel (a bzImage's; nothing to unpack otherwise).
const cold = await timeToBanner(tsvmm, tsvmmEnv);
const unpacked = readdirSync(path.join(cacheDir, 'kernels'), { withFileTypes: true }).find((f) => f.name.startsWith('vmlinux-'));
const vmlinux = unpacked === undefined ? undefined : path.join(cacheDir, 'kernels', unpacked.name);
// tsvmm runs with TSVMM_TRACE_PHASES=1 (a dozen lines on stderr, none on the guest's path) to split
// its time at the moment its vCPU thread first enters the guest.
const oursPhases = [];
for (let i = 0; i < runs; i++) {
  const r = await timeToBanner(tsvmm, tsvmmEnv);
  ours.push(r.ms);
  oursPhases.push(parsePhases(r.stderr));
  if (haveQemu) theirs.push((await timeToBanner(qemu)).ms);
  if (vmlinux !== undefined && !kvmPvm) oursGuestUnpacks.push((await timeToBanner(tsvmmGuestUnpacks, tsvmmEnv)).ms);
  if (haveQemu && vmlinux !== undefined) theirsVmlinux.push((await timeToBanner(qemuWith(vmlinux))).ms);
}
const nodeStart = median(Array.from({ length: 3 }, () => timeSync([process.execPath, [path.join(root, 'bin', 'tsvmm.cjs'), '--version']])));
const kernelBytes = readFileSync(kernel).length;
// From tsvmm's own trace: the CLI loaded, then the kernel file read, parsed and (cache hit) mapped.
const readMs = median(oursPhases.map((p) => phaseMs(p, /^kernel file read and parsed/) - phaseMs(p, /^modules loaded/)));

console.log(`linux-banner: exec to "Linux version" on ttyS0, ${path.basename(kernel)} (${(kernelBytes / 2 ** 20).toFixed(1)} MiB), median of ${runs}`);
console.log(`  tsvmm : ${secs(median(ours))} s   (runs: ${ours.map(secs).join(', ')}; the first boot, which unpacked the kernel into an empty cache: ${secs(cold.ms)} s)`);
console.log(`          of which: node + tsvmm modules ${secs(nodeStart)} s (tsvmm --version), reading the kernel (traced, median) ${secs(readMs)} s,`);
console.log(`          the rest (VM build, load, guest to its banner) ${secs(median(ours) - nodeStart - readMs)} s`);
const entered = oursPhases.map((p) => phaseMs(p, /^vcpu thread: entering the guest/));
console.log(`          traced: exec to guest entry ${(median(entered) / 1000).toFixed(2)} s, guest entry to banner ${(median(ours.map((ms, i) => ms - entered[i])) / 1000).toFixed(2)} s (medians)`);
console.log(`          median run's milestones, ms since its start: ${milestones(oursPhases[ours.indexOf(median(ours))])}`);
if (vmlinux !== undefined && !kvmPvm) {
  console.log(`  tsvmm --kernel-decompress guest (the guest's decompressor runs): ${secs(median(oursGuestUnpacks))} s   (runs: ${oursGuestUnpacks.map(secs).join(', ')})`);
} else if (kvmPvm) {
  console.log('  tsvmm --kernel-decompress guest: not run: /dev/kvm is kvm_pvm, where the guest\'s decompressor runs emulated for minutes (QEMU\'s bzImage row shows how long)');
}
if (haveQemu) {
  console.log(`  QEMU  : ${secs(median(theirs))} s   (runs: ${theirs.map(secs).join(', ')}; baseline: qemu-system-x86_64 -enable-kvm${kvmPvm ? '' : ' -cpu host'} -M microvm)`);
  if (vmlinux !== undefined) {
    console.log(`  QEMU given the vmlinux tsvmm unpacked (PVH entry, no decompressor either): ${secs(median(theirsVmlinux))} s   (runs: ${theirsVmlinux.map(secs).join(', ')})`);
  }
  const bound = median(theirs) >= TIMEOUT_MS ? '< ' : '';
  console.log(`  ratio tsvmm / QEMU: ${bound}${(median(ours) / median(theirs)).toFixed(bound ? 3 : 2)}  (target <= 0.5${bound ? '; QEMU never reached its banner within --timeout' : ''})`);
} else {
  console.log('  QEMU  : skipped: qemu-system-x86_64 is not installed (apt install qemu-system-x86)');
}
console.log(`  reproduce: node bench/linux-banner.mjs --kernel ${kernel} --runs ${runs} --timeout ${values.timeout}`);
