import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import { guest } from '../helpers/paths.js';
import { runCli } from '../helpers/run-cli.js';
import { checkDiskStamps } from '../helpers/diskcheck-stamps.js';

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
    // The host's own check of what the guest wrote: every sector holds the stamp of run 5, pass 2.
    expect(checkDiskStamps(readFileSync(disk), 5, 2)).toEqual({ ok: 2048, bad: 0, firstBad: [] });

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
