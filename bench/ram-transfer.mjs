#!/usr/bin/env node
// bench/ram-transfer: what loopback TCP on this host carries from RAM into RAM, in C++ with no runtime
// in the way (bench/ram-transfer.cc, built here with g++), as a ratio to the hot-buffer pair that
// bench/migrate takes as its loopback limit (bench/loopback-tcp.c, 1 s), measured in the same round:
// the ceiling a migration can reach here, whatever the VMM:
//   ram     a sender writing 1 MiB at a time straight from RAM full of data
//   stream  the same with tsvmm's per-byte work (zero test, copy into 768-page records, XXH3 each side)
// each into the receiver's memory as a destination may have it: preallocated (--mem-prealloc),
// just freed by a holder (how bench/migrate gives each destination its memory) or fresh. On a host
// that is a VM handing free memory back to its hypervisor, fresh memory costs a fault per page to
// write (bench/host-memory.mjs).
// Each round runs the hot pair, then each case once; a case's figure is the median of its rounds'
// ratios to its round's hot pair (a host whose loopback rate swings between runs moves both).
//
// Reproduce: node bench/ram-transfer.mjs [--gib 1] [--rounds 5] [--modes ram,stream] [--dests prealloc,just-freed,fresh]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './bench-args.mjs';
import { cLoopback } from './loopback-tcp.mjs';

const values = benchArgs(import.meta.url, {
  gib: { type: 'string', default: '1' },
  rounds: { type: 'string', default: '5' },
  modes: { type: 'string', default: 'ram,stream' },
  dests: { type: 'string', default: 'prealloc,just-freed,fresh' },
});
const gib = Number(values.gib);
const rounds = Number(values.rounds);
const modes = values.modes.split(',');
const dests = values.dests.split(',');
if (!(gib > 0) || !Number.isInteger(rounds) || rounds < 1
  || modes.some((m) => !['ram', 'stream'].includes(m)) || dests.some((d) => !['prealloc', 'just-freed', 'fresh'].includes(d))) {
  console.error('bench/ram-transfer: --gib must be a positive number, --rounds a positive whole number, --modes of ram,stream and --dests of prealloc,just-freed,fresh');
  process.exit(2);
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const workDir = mkdtempSync(path.join(os.tmpdir(), 'tsvmm-ram-transfer-'));
process.on('exit', () => rmSync(workDir, { recursive: true, force: true }));
const exe = path.join(workDir, 'ram-transfer');
const cc = spawnSync('g++', ['-O2', '-o', exe, path.join(root, 'bench', 'ram-transfer.cc')], { encoding: 'utf8' });
if (cc.error !== undefined || cc.status !== 0) {
  console.error(`bench/ram-transfer: cannot build bench/ram-transfer.cc with g++: ${cc.error?.message ?? cc.stderr.trim()}`);
  process.exit(4);
}

/** MiB/s of one transfer. */
function transfer(mode, dest) {
  const r = spawnSync(exe, [mode, String(gib), dest], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/ram-transfer ${mode} ${dest} failed: ${r.stderr.trim()}`);
  return Number(r.stdout);
}

const cases = modes.flatMap((mode) => dests.map((dest) => ({ mode, dest, rates: [], ratios: [] })));
const hot = [];
console.log(`bench/ram-transfer: ${gib} GiB per transfer over 127.0.0.1, ${rounds} rounds`);
for (let round = 1; round <= rounds; round++) {
  const pair = cLoopback(workDir, 1);
  if (pair === undefined) {
    console.error('bench/ram-transfer: cannot build bench/loopback-tcp.c with gcc');
    process.exit(4);
  }
  const limit = pair / 2 ** 20;
  hot.push(limit);
  const line = [`hot ${limit.toFixed(0)}`];
  for (const c of cases) {
    const rate = transfer(c.mode, c.dest);
    c.rates.push(rate);
    c.ratios.push(rate / limit);
    line.push(`${c.mode}/${c.dest} ${rate.toFixed(0)}`);
  }
  console.log(`  round ${round} (MiB/s): ${line.join(', ')}`);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
console.log(`\n  hot pair (the loopback limit): median ${median(hot).toFixed(0)} MiB/s, ${Math.min(...hot).toFixed(0)}-${Math.max(...hot).toFixed(0)}`);
console.log('  case                  MiB/s   ratio to its round\'s hot pair: median (range)');
for (const c of cases) {
  const name = `${c.mode} into ${c.dest}`.padEnd(22);
  console.log(`  ${name}${median(c.rates).toFixed(0).padStart(5)}   ${median(c.ratios).toFixed(2)} (${Math.min(...c.ratios).toFixed(2)}-${Math.max(...c.ratios).toFixed(2)})`);
}
console.log(`  reproduce: node bench/ram-transfer.mjs --gib ${values.gib} --rounds ${rounds} --modes ${modes.join(',')} --dests ${dests.join(',')}`);
