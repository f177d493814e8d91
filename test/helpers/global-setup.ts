import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { kvmAvailable } from './kvm.js';

/**
 * Runs once per `vitest run`, before any test file:
 *
 * - Every temporary file of the run (QMP sockets, disk images, certificates, console logs, in the test
 *   processes and in the tsvmm and QEMU processes they start, which inherit the environment) goes
 *   under one directory, set as TMPDIR for the workers, and removed when the run ends, passed or
 *   failed. Before this, each run left ~2000 directories and ~70 MB in /tmp.
 * - Without /dev/kvm the KVM suites (*.kvm.test.ts) skip, and this says so once, loudly. Where KVM is
 *   required (TSVMM_REQUIRE_KVM=1, as `npm run test:kvm` sets inside nested KVM), its absence fails
 *   the run.
 */
export default function setup(): () => void {
  const previous = process.env.TMPDIR;
  const runDir = mkdtempSync(path.join(tmpdir(), 'tsvmm-test-run-'));
  process.env.TMPDIR = runDir;
  const teardown = () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    rmSync(runDir, { recursive: true, force: true });
  };
  if (kvmAvailable()) return teardown;
  if (process.env.TSVMM_REQUIRE_KVM === '1') {
    teardown();
    throw new Error('TSVMM_REQUIRE_KVM=1 but /dev/kvm is missing or not read-writable');
  }
  process.stderr.write('\n*** SKIPPING every KVM test: /dev/kvm is missing or not read-writable on this host (run `npm run test:kvm` for nested KVM) ***\n\n');
  return teardown;
}
