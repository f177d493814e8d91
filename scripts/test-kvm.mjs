#!/usr/bin/env node
// Runs the KVM test suites (test/**/*.kvm.test.ts) where real KVM is: on this host if /dev/kvm exists,
// otherwise inside a nested-KVM VM (scripts/nested-kvm/run.sh: Debian's kernel under QEMU TCG with
// kvm_amd, a real /dev/kvm). KVM must then be present: TSVMM_REQUIRE_KVM=1 makes its absence a failure.
import { accessSync, constants } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Arguments narrow the run to those files (vitest filters), as with `npm test -- FILTER`.
const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const flags = process.argv.slice(2).filter((a) => a.startsWith('-'));
const vitest = [process.execPath, path.join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...(filters.length > 0 ? filters : ['.kvm.test']), ...flags];
const env = { ...process.env, TSVMM_REQUIRE_KVM: '1' };

let hostKvm = true;
try {
  accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
} catch {
  hostKvm = false;
}
// Inside nested KVM, /tmp is the host's, shared over 9p, where unix sockets cannot be made; the
// tests' temporary files (QMP sockets among them) go to the nested VM's own tmpfs instead.
const [cmd, ...args] = hostKvm
  ? vitest
  : [path.join(root, 'scripts', 'nested-kvm', 'run.sh'), '--', 'env', 'TMPDIR=/dev/shm', ...vitest];
if (!hostKvm) process.stderr.write('test:kvm: no /dev/kvm here; running the KVM suites inside nested KVM (QEMU TCG + kvm_amd)\n');
const r = spawnSync(cmd, args, { cwd: root, env, stdio: 'inherit' });
process.exit(r.status ?? 1);
