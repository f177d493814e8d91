import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import { guest } from '../helpers/paths.js';
import { runCli } from '../helpers/run-cli.js';

/**
 * The stamp diskcheck writes into sector `lba` (guests/README.md, "diskcheck"): magic, lba, run, pass,
 * 121 derived words, FNV-1a-32 of the first 508 bytes. Rebuilt here so the host checks the guest's
 * writes independently of the guest's own verification.
 */
function stamp(lba: number, run: number, pass: number): Buffer {
  const b = Buffer.alloc(512);
  b.write('DISKCHK1', 0, 'latin1');
  b.writeBigUInt64LE(BigInt(lba), 8);
  b.writeUInt32LE(run, 16);
  b.writeUInt32LE(pass, 20);
  for (let k = 0; k < 121; k++) {
    const w = (Math.imul(lba >>> 0, 0x9e3779b1) + Math.imul(run, 0x85ebca6b) + Math.imul(pass, 0xc2b2ae35) + Math.imul(k, 0x27d4eb2f)) >>> 0;
    b.writeUInt32LE(w, 24 + 4 * k);
  }
  let h = 0x811c9dc5;
  for (let i = 0; i < 508; i++) h = Math.imul(h ^ b[i]!, 0x01000193) >>> 0;
  b.writeUInt32LE(h, 508);
  return b;
}

function image(bytes: number): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'tsvmm-blk-')), 'disk.img');
  writeFileSync(file, Buffer.alloc(bytes));
  return file;
}

describeKvm('virtio-blk on real KVM, driven by the diskcheck guest', () => {
  it('diskcheck writes, flushes and verifies every sector, and the host finds its stamps in the image', async () => {
    const disk = image(1024 * 1024);
    const r = await runCli(['run', guest('diskcheck'), '--disk', disk, '--cmdline', 'run=5 passes=2'], { timeoutMs: 120_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('diskcheck: slot=7 capacity=2048 sectors=2048 req=65536 depth=4 run=5 passes=2 ro=0 flush=1 verify-only=0\n');
    expect(r.stdout).toContain('diskcheck: id="disk.img"\n');
    expect(r.stdout).toContain('diskcheck: pass 2: wrote 2048 sectors, flushed, read 2048, ok 2048, bad 0\n');
    expect(r.stdout).toContain('diskcheck: PASS\n');
    expect(r.status).toBe(33);
    const bytes = readFileSync(disk);
    const bad: number[] = [];
    for (let lba = 0; lba < 2048; lba++) {
      if (!bytes.subarray(lba * 512, lba * 512 + 512).equals(stamp(lba, 5, 2))) bad.push(lba);
    }
    expect(bad).toEqual([]);

    // A second boot checks what the first left, without writing.
    const again = await runCli(['run', guest('diskcheck'), '--disk', `${disk},readonly`, '--cmdline', 'run=5 passes=2 verify-only=1'], { timeoutMs: 120_000 });
    expect(again.stdout).toContain('diskcheck: pass 2: wrote 0 sectors, not flushed, read 2048, ok 2048, bad 0\n');
    expect(again.status).toBe(33);
  }, 300_000);

  it('a read-only disk gives the guest write errors (VIRTIO_BLK_S_IOERR), not a hang, and the image is untouched', async () => {
    const disk = image(1024 * 1024);
    const r = await runCli(['run', guest('diskcheck'), '--disk', `${disk},readonly`, '--cmdline', 'run=1 passes=1'], { timeoutMs: 120_000 });
    expect(r.stdout).toContain('ro=1');
    expect(r.stdout).toMatch(/diskcheck: write errors: \d+ requests failed \(IOERR \d+, UNSUPP 0, other 0\), first at sector 0 status 1\n/);
    expect(r.stdout).toContain('diskcheck: FAIL write errors\n');
    expect(r.status).toBe(37);
    expect(readFileSync(disk).equals(Buffer.alloc(1024 * 1024))).toBe(true);
  }, 150_000);
});
