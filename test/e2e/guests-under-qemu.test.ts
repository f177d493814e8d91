import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/paths.js';

const qemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;
if (!qemu) process.stderr.write('\n*** SKIPPING guests-under-qemu: qemu-system-x86_64 is not installed (apt install qemu-system-x86) ***\n\n');

// Our guests must boot unchanged under QEMU too, which is what lets every benchmark put QEMU beside us.
// This proves the images, independently of tsvmm (TCG: it needs no /dev/kvm).
(qemu ? describe : describe.skip)('test guests under QEMU microvm', () => {
  it('every guest prints what it should and exits with the expected status', () => {
    const r = spawnSync('bash', [path.join(ROOT, 'guests', 'test-under-qemu.sh')], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stdout).toMatch(/all guests OK under QEMU/);
    expect(r.status).toBe(0);
  });
});
