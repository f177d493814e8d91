#!/usr/bin/env node
// Runs the KVM test suites (test/**/*.kvm.test.ts) where real KVM is: on this host if /dev/kvm exists,
// otherwise inside a nested-KVM VM (scripts/nested-kvm/run.sh: Debian's kernel under QEMU TCG with
// kvm_amd, a real /dev/kvm). KVM must then be present: TSVMM_REQUIRE_KVM=1 makes its absence a failure.
//
// Usage: node scripts/test-kvm.mjs [--time-limit SECONDS] [FILE FILTER...] [VITEST FLAG...]
//
// Each test's start and end are printed as they happen (test/helpers/live-reporter.ts), and every VMM
// a test starts logs its console and stderr to a directory named at the start. With --time-limit the
// run is stopped after that many seconds; a run that fails or is stopped then prints what was still
// running, the kernel's last messages and the newest VMM logs, so a hang in CI says where it was.
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
let timeLimitS = 0;
const limitAt = argv.indexOf('--time-limit');
if (limitAt >= 0) {
  timeLimitS = Number(argv[limitAt + 1]);
  if (!Number.isInteger(timeLimitS) || timeLimitS <= 0) {
    process.stderr.write(`test:kvm: --time-limit wants a whole number of seconds, not ${JSON.stringify(argv[limitAt + 1])}\n`);
    process.exit(2);
  }
  argv.splice(limitAt, 2);
}
// Arguments narrow the run to those files (vitest filters), as with `npm test -- FILTER`.
const filters = argv.filter((a) => !a.startsWith('-'));
const flags = argv.filter((a) => a.startsWith('-'));
if (!flags.some((f) => f.startsWith('--reporter'))) flags.push('--reporter=default', '--reporter=./test/helpers/live-reporter.ts');
const vitest = [process.execPath, path.join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...(filters.length > 0 ? filters : ['.kvm.test']), ...flags];
// Under the host's /tmp, which nested KVM shares (9p), so the logs outlive the nested VM.
const logDir = mkdtempSync(path.join(tmpdir(), 'tsvmm-kvm-logs-'));
const env = { ...process.env, TSVMM_REQUIRE_KVM: '1', TSVMM_TEST_LOG_DIR: logDir };

let hostKvm = true;
try {
  accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
} catch {
  hostKvm = false;
}

// Runs where the tests run (inside the nested VM when there is one): the time limit, and on failure
// what was running and what the kernel said last. SIGTERM first so vitest can end its VMMs; SIGKILL
// 30 s later if it has not.
const diagnose = 'echo "test:kvm: the run failed (status $rc); still running:"; ps -eo pid,stat,etimes,wchan:24,args | grep -v "\\[" | cut -c1-200; ' +
  'echo "test:kvm: the kernel\'s last messages:"; dmesg | tail -n 25';
const guarded = [
  'sh', '-c',
  `${timeLimitS > 0 ? `timeout -k 30 ${timeLimitS} ` : ''}"$@"; rc=$?; ` +
    `[ $rc -eq 124 ] && echo "test:kvm: stopped after the time limit of ${timeLimitS} s"; ` +
    `[ $rc -ne 0 ] && { ${diagnose}; }; exit $rc`,
  'test-kvm', ...vitest,
];
// Inside nested KVM, /tmp is the host's, shared over 9p, where unix sockets cannot be made; the
// tests' temporary files (QMP sockets among them) go to the nested VM's own tmpfs instead.
const [cmd, ...args] = hostKvm
  ? guarded
  : [path.join(root, 'scripts', 'nested-kvm', 'run.sh'), '--', 'env', 'TMPDIR=/dev/shm', ...guarded];
if (!hostKvm) process.stderr.write('test:kvm: no /dev/kvm here; running the KVM suites inside nested KVM (QEMU TCG + kvm_amd)\n');
process.stderr.write(`test:kvm: VMM logs in ${logDir} (kept if the run fails)\n`);
// A nested VM whose kernel hangs never runs the time limit inside it: the same limit, plus the
// nested boot's margin, holds from out here.
const r = spawnSync(cmd, args, { cwd: root, env, stdio: 'inherit', ...(timeLimitS > 0 ? { timeout: (timeLimitS + 120) * 1000, killSignal: 'SIGTERM' } : {}) });
const status = r.status ?? 1;
if (status !== 0) printNewestLogs(6);
else rmSync(logDir, { recursive: true, force: true });
process.exit(status);

/** The last lines of the `count` VMM logs written last: the VMMs of the test that failed or hung. */
function printNewestLogs(count) {
  const files = readdirSync(logDir).map((f) => path.join(logDir, f))
    .map((file) => ({ file, mtimeMs: statSync(file).mtimeMs }))
    .sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const { file } of files.slice(0, count)) {
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    process.stderr.write(`test:kvm: last lines of ${path.basename(file)}:\n  ${lines.slice(-12).join('\n  ')}\n`);
  }
}
