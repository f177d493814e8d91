// The pre-copy convergence policy without a VM: what PrecopySender does with the pages of each sync.
import { describe, expect, it } from 'vitest';
import {
  ConvergencePolicy, MAX_CATCH_UPS, MAX_SETTLE_PASSES, SETTLE_SHRINK, THROTTLE_AFTER_PASSES, nextThrottle, type SyncFacts,
} from '../../../src/migration/convergence.js';

const MiB = 1024 * 1024;
const PAGE = 4096;

/** A sync's facts over a link of 500 MiB/s with the default 300 ms limit; `pages` decides the expected downtime. */
function sync(pages: number, over: Partial<SyncFacts> = {}): SyncFacts {
  const link = 500 * MiB;
  return {
    pages, expectedDowntimeMs: ((pages * PAGE) / link) * 1000, downtimeLimitMs: 300, passes: 1, appliedPass: 1,
    autoConverge: true, dirtyBytesPerSecond: 0, linkBytesPerSecond: link, throttlePercent: 0, ...over,
  };
}

/** Pages whose expected downtime is `ms` on sync()'s link. */
const pagesFor = (ms: number) => Math.round((ms / 1000) * 500 * MiB / PAGE);

describe('ConvergencePolicy', () => {
  it('sends a set over the downtime limit live, and throttles only from THROTTLE_AFTER_PASSES on with auto-converge', () => {
    const over = pagesFor(600);
    expect(new ConvergencePolicy().afterSync(sync(over, { passes: THROTTLE_AFTER_PASSES - 1 }))).toEqual({ kind: 'send' });
    expect(new ConvergencePolicy().afterSync(sync(over, { passes: THROTTLE_AFTER_PASSES, autoConverge: false }))).toEqual({ kind: 'send' });
    expect(new ConvergencePolicy().afterSync(sync(over, { passes: THROTTLE_AFTER_PASSES }))).toEqual({ kind: 'send', throttlePercent: 20 });
  });

  it('switches over on an empty set at once, even as the first fit', () => {
    expect(new ConvergencePolicy().afterSync(sync(0))).toEqual({ kind: 'switch-over' });
  });

  it('settles: a first fit goes live, and so does each set at most SETTLE_SHRINK of the one before, until one is not', () => {
    const policy = new ConvergencePolicy();
    let pages = pagesFor(200);
    expect(policy.afterSync(sync(pages))).toEqual({ kind: 'send' }); // the first fit: nothing to compare with
    pages = Math.floor(pages * SETTLE_SHRINK);
    expect(policy.afterSync(sync(pages))).toEqual({ kind: 'send' }); // shrank enough
    pages = Math.floor(pages * SETTLE_SHRINK) + 2;
    expect(policy.afterSync(sync(pages))).toEqual({ kind: 'switch-over' }); // shrank, but not enough
  });

  it('settles at most MAX_SETTLE_PASSES times however well the set keeps shrinking', () => {
    const policy = new ConvergencePolicy();
    let pages = pagesFor(250);
    const decisions: string[] = [];
    for (let i = 0; i < MAX_SETTLE_PASSES + 3; i++) {
      const next = policy.afterSync(sync(pages));
      decisions.push(next.kind);
      if (next.kind === 'switch-over') break;
      pages = Math.floor(pages / 2);
    }
    expect(decisions).toEqual([...Array<string>(MAX_SETTLE_PASSES).fill('send'), 'switch-over']);
  });

  it('measures shrinking against the sync before, over the limit or not', () => {
    const policy = new ConvergencePolicy();
    expect(policy.afterSync(sync(pagesFor(380)))).toEqual({ kind: 'send' }); // over the limit, pass 1: no throttle yet
    // Fits, but is not SETTLE_SHRINK of the set before: no settling, though it is the first fit.
    expect(policy.afterSync(sync(pagesFor(290)))).toEqual({ kind: 'switch-over' });
  });

  it('waits for a destination behind on its passes (catch-up), at most MAX_CATCH_UPS times, then switches over anyway', () => {
    const policy = new ConvergencePolicy();
    const behind = (pages: number) => sync(pages, { passes: 5, appliedPass: 3 });
    expect(policy.afterSync(behind(0)).kind).toBe('catch-up');
    for (let i = 1; i < MAX_CATCH_UPS; i++) expect(policy.afterSync(behind(0)).kind).toBe('catch-up');
    expect(policy.afterSync(behind(0))).toEqual({ kind: 'switch-over' });
  });

  it('does not catch up with a destination that has applied every pass', () => {
    expect(new ConvergencePolicy().afterSync(sync(0, { passes: 5, appliedPass: 5 }))).toEqual({ kind: 'switch-over' });
  });

  it('takes a larger downtime limit set mid-migration at the next sync', () => {
    const policy = new ConvergencePolicy();
    const pages = pagesFor(600);
    expect(policy.afterSync(sync(pages, { passes: 2, appliedPass: 2, autoConverge: false }))).toEqual({ kind: 'send' });
    expect(policy.afterSync(sync(pages, { passes: 3, appliedPass: 3, autoConverge: false, downtimeLimitMs: 1000 }))).toEqual({ kind: 'switch-over' });
  });
});

describe('nextThrottle', () => {
  it("steps as QEMU's auto-converge: 20% first, then 10 points more each pass, up to 99", () => {
    expect(nextThrottle(0, 1, 1000)).toBe(20);
    expect(nextThrottle(20, 1, 1000)).toBe(30);
    expect(nextThrottle(90, 1, 1000)).toBe(99);
    expect(nextThrottle(99, 1, 1000)).toBe(99);
  });

  it('jumps to the share that halves the unthrottled dirty rate against the link, when stepping would take longer', () => {
    // Dirtying 10x what the link carries, unthrottled: running 5% of the time dirties half the link's rate.
    expect(nextThrottle(0, 1000, 100)).toBe(95);
    // Already at 50%, the measured 500 B/s is 1000 unthrottled: the same 95%.
    expect(nextThrottle(50, 500, 100)).toBe(95);
  });

  it('never throttles for a guest that dirties nothing beyond the step', () => {
    expect(nextThrottle(0, 0, 100)).toBe(20);
  });
});
