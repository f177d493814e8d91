// A vitest reporter for long KVM runs (scripts/test-kvm.mjs): each test's start and end, and a failure's
// errors, are printed the moment they happen. The default reporters print a file's results when the
// file ends, so a run killed by a time limit (as CI's is) showed neither which test hung nor why an
// earlier one failed.
import type { Reporter, TestCase } from 'vitest/node';

const since = Date.now();
const stamp = () => `[${((Date.now() - since) / 1000).toFixed(1).padStart(7)} s]`;
const label = (t: TestCase) => `${t.module.relativeModuleId} > ${t.fullName}`;

export default class LiveReporter implements Reporter {
  onTestCaseReady(test: TestCase): void {
    process.stdout.write(`${stamp()} start ${label(test)}\n`);
  }

  onTestCaseResult(test: TestCase): void {
    const result = test.result();
    const ms = test.diagnostic()?.duration ?? 0;
    process.stdout.write(`${stamp()} ${result.state} ${label(test)} (${(ms / 1000).toFixed(1)} s)\n`);
    for (const error of result.errors ?? []) {
      process.stdout.write(`    ${(error.stack ?? error.message).split('\n').join('\n    ')}\n`);
    }
  }
}
