// The 2015 QEMU migration bug, as a test that must stay green, and that must go red when either
// protection is switched off.
//
// The dirtier guest stamps every page of a RAM range, pass after pass. With dirty logging on, the VMM
// takes a copy of RAM, then for many rounds churns memslots the way QEMU's boot did (a hole punched
// at 0xca000-0xcd000 for the kvmvapic ROM and filled back, that range made read-only and writable,
// neighbours merged, logging switched off and on), writes guest pages itself as a device would, and
// syncs: after each sync it copies exactly the pages the bitmaps call dirty onto the copy, as a
// migration pass would send them. At the end, with vCPUs paused, one last slot change and sync: the
// copy must equal RAM page for page.
import { openSync, readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { PAGE_SIZE, gpa, MiB } from '../../src/arch/x86/layout.js';
import { Vm, type VmConfig } from '../../src/machine/vm.js';
import type { RegionDirtyPages } from '../../src/memory/dirty-tracker.js';
import { describeKvm } from '../helpers/kvm.js';
import { guest } from '../helpers/paths.js';

const STAMP_START = 16 * MiB;
const STAMP_SIZE = 32 * MiB;
/** Guest pages only the VMM writes (the dirtier stays above 16 MiB): where invariant B is visible. */
const VMM_AREA = 8 * MiB;
const ROUNDS = Number(process.env.TSVMM_CHURN_ROUNDS ?? 800);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ChurnResult {
  mismatchedPages: number[];
  slotChanges: number;
  syncs: number;
  pauses: number;
  meanPauseUs: number;
  maxPauseUs: number;
  guestVerify: string;
}

let vm: Vm | undefined;
afterEach(async () => {
  await vm?.stop();
  vm?.dispose();
  vm = undefined;
});

/** The pass number the dirtier last wrote into its first page. */
function firstPagePass(v: Vm): bigint {
  return v.memory.readU64(gpa(STAMP_START));
}

async function waitForPassAfter(v: Vm, pass: bigint): Promise<bigint> {
  const t0 = Date.now();
  for (;;) {
    const now = firstPagePass(v);
    if (now > pass) return now;
    if (Date.now() - t0 > 30_000) throw new Error(`dirtier stuck at pass ${now} (vCPU paused: ${v.vcpus.isPaused()}, exits ${v.vcpus.exitCount(0)})`);
    await sleep(1);
  }
}

/** Copies the pages a sync called dirty from RAM onto the copy, as a migration pass sends them. */
function apply(copy: Uint8Array[], dirty: readonly RegionDirtyPages[]): void {
  dirty.forEach(({ region, bitmap }, i) => {
    for (let w = 0; w < bitmap.length; w++) {
      const word = bitmap[w]!;
      if (word === 0) continue;
      for (let bit = 0; bit < 32; bit++) {
        if (!((word >>> bit) & 1)) continue;
        const at = (w * 32 + bit) * PAGE_SIZE;
        copy[i]!.set(region.bytes.subarray(at, at + PAGE_SIZE), at);
      }
    }
  });
}

function mismatches(v: Vm, copy: Uint8Array[]): number[] {
  const bad: number[] = [];
  v.memory.regions.forEach((r, i) => {
    const a = new BigUint64Array(r.bytes.buffer, r.bytes.byteOffset, r.sizeBytes / 8);
    const b = new BigUint64Array(copy[i]!.buffer, 0, r.sizeBytes / 8);
    for (let p = 0; p < r.sizeBytes / PAGE_SIZE; p++) {
      for (let q = p * 512; q < (p + 1) * 512; q++) {
        if (a[q] !== b[q]) { bad.push(r.start + p * PAGE_SIZE); break; }
      }
    }
  });
  return bad;
}

async function churn(testOnly: VmConfig['testOnly'], rounds: number): Promise<ChurnResult> {
  const consoleFile = path.join(mkdtempSync(path.join(tmpdir(), 'tsvmm-dirtier-')), 'console');
  vm = Vm.create({
    kernelPath: guest('dirtier'), memBytes: 64 * MiB, cpus: 1,
    cmdline: `dirtier start=0x${STAMP_START.toString(16)} size=0x${STAMP_SIZE.toString(16)}`,
    serialOutputFd: openSync(consoleFile, 'w'), testOnly,
  });
  const v = vm;
  v.start();
  let pass = await waitForPassAfter(v, 0n);

  await v.dirty.start();
  const copy = v.memory.regions.map((r) => r.bytes.slice());
  let syncs = 0;
  const ops: (() => Promise<void>)[] = [
    () => v.memslots.punchHole(0xca000, 0x3000), // the kvmvapic ROM window of 2015
    () => v.memslots.fillHole(0xca000, 0x3000),
    () => v.memslots.setReadOnly(0xc0000, 0x20000, true), // option ROM shadowing
    () => v.memslots.setReadOnly(0xc0000, 0x20000, false),
    () => v.memslots.punchHole(0x400000, 0x10000),
    () => v.memslots.fillHole(0x400000, 0x10000),
    () => v.memslots.coalesce(),
    async () => { await v.memslots.setDirtyLogging(false); await v.memslots.setDirtyLogging(true); },
  ];
  let stopped: string | undefined;
  void v.stopped.then((s) => { stopped = JSON.stringify(s); });
  for (let round = 0; round < rounds; round++) {
    if (stopped !== undefined) throw new Error(`the guest stopped at round ${round}: ${stopped}`);
    if (round % 100 === 0) process.stderr.write(`no-lost-dirty-page: round ${round}, pass ${pass}, ${v.memslots.slots().length} slots\n`);
    await ops[round % ops.length]!();
    // A device writing guest memory (invariant B): a page only the VMM touches.
    v.memory.write(gpa(VMM_AREA + (round % 64) * PAGE_SIZE), new Uint8Array(64).fill(round & 0xff));
    if (round % 4 === 3) {
      apply(copy, v.dirty.sync());
      syncs++;
    }
    if (round % 16 === 0) pass = await waitForPassAfter(v, pass); // let the guest dirty a full pass
  }

  // Final: make sure the guest and the VMM wrote since the last sync, then, with vCPUs paused, one
  // more slot split and the last sync, as migration's final pass would.
  apply(copy, v.dirty.sync());
  syncs++;
  // A pass begun after that sync (`pass` from the loop may be long gone: waiting on it alone let the
  // vCPUs pause before the guest wrote anything, and invariant A's test then found nothing to lose).
  pass = await waitForPassAfter(v, firstPagePass(v));
  v.memory.write(gpa(VMM_AREA), new Uint8Array(PAGE_SIZE).fill(0x5a));
  await v.vcpus.pause();
  await v.memslots.punchHole(0xca000, 0x3000);
  apply(copy, v.dirty.sync());
  syncs++;
  const bad = mismatches(v, copy);
  await v.memslots.fillHole(0xca000, 0x3000);
  v.resume();

  // The guest's own view: its stamps are all there.
  v.serialInput(new TextEncoder().encode('v'));
  const t0 = Date.now();
  let out = '';
  while (!/verify (ok|FAILED)[^\n]*\n/.test(out) && Date.now() - t0 < 30_000) {
    await sleep(20);
    out = readFileSync(consoleFile, 'utf8');
  }
  const s = v.memslots.stats;
  return {
    mismatchedPages: bad, slotChanges: s.changes, syncs, pauses: s.pauses,
    meanPauseUs: s.pausedNsTotal / s.pauses / 1000, maxPauseUs: s.pausedNsMax / 1000,
    guestVerify: /dirtier: verify[^\n]*/.exec(out)?.[0] ?? `(no verify line in: ${out.slice(-200)})`,
  };
}

describeKvm('no-lost-dirty-page: memslot churn under a dirtying guest loses no page', () => {
  it('with both invariants on, the dirty-page copy equals RAM page for page', async () => {
    const r = await churn(undefined, ROUNDS);
    process.stderr.write(`no-lost-dirty-page: ${ROUNDS} rounds, ${r.slotChanges} slot creations/deletions, ${r.syncs} syncs, ` +
      `${r.pauses} pauses (mean ${r.meanPauseUs.toFixed(0)} us, max ${r.maxPauseUs.toFixed(0)} us); guest: ${r.guestVerify}\n`);
    expect(r.slotChanges).toBeGreaterThanOrEqual(2000);
    expect(r.mismatchedPages).toEqual([]);
    expect(r.guestVerify).toMatch(/verify ok/);
  }, 600_000);

  it('with invariant A off (no sync before delete), the loss is caught', async () => {
    const r = await churn({ skipSyncBeforeDelete: true }, 16);
    expect(r.mismatchedPages.length).toBeGreaterThan(0);
    // The lost pages are guest pages; the VMM's own page is still marked.
    expect(r.mismatchedPages.every((p) => p >= STAMP_START || p < VMM_AREA)).toBe(true);
  }, 600_000);

  it('with invariant B off (VMM writes unmarked), the loss is caught', async () => {
    const r = await churn({ testOnlySkipVmmDirtyMarking: true }, 16);
    expect(r.mismatchedPages).toContain(VMM_AREA);
    expect(r.mismatchedPages.every((p) => p >= VMM_AREA && p < VMM_AREA + 64 * PAGE_SIZE)).toBe(true);
  }, 600_000);
});
