/**
 * When a pre-copy migration stops its guest, and how hard it throttles it before then: the decision
 * PrecopySender takes after each live dirty-log sync, as a pure state machine over what the sync
 * and the link measured, so that the policy is tested without a VM (test/unit/migration/convergence).
 *
 * After each sync, in this order:
 *  1. The dirty set does not fit the downtime limit at the measured bandwidth: send it live, and from
 *     the THROTTLE_AFTER_PASSES-th pass on, with auto-converge, throttle the vCPUs (nextThrottle).
 *  2. It fits, and still shrinks well (settling): send it live too, at most MAX_SETTLE_PASSES times.
 *  3. It fits and has stopped shrinking (or is empty): switch over, unless the destination has not yet
 *     applied every pass sent. Then send it live once more and wait for the destination (catch-up),
 *     at most MAX_CATCH_UPS times; past that, switch over anyway.
 */

/**
 * Without convergence after this many passes, vCPUs are throttled, 10 points more each pass
 * (auto-converge). 2: the first pass sends everything and the second is the first to measure how
 * fast the guest dirties against the link, as QEMU starts throttling at its second sync that finds
 * the dirty rate too high (migration_trigger_throttle).
 */
export const THROTTLE_AFTER_PASSES = 2;

/**
 * Settling: a pass whose dirty set fits the downtime limit is still sent live (not in the pause) when
 * it is at most this fraction of the pass before (the first fit always: nothing to compare it with),
 * up to MAX_SETTLE_PASSES times. On kvm_pvm a guest rewriting 64 MiB dirties ~250 MiB/s under logging
 * (write-protect faults) against ~400-600 MiB/s sent, so each pass about halves the set: stopping on
 * the first that fits paused the guest for 40-110 ms, where QEMU, iterating on, paused it for 6-30 ms;
 * settling, 3-9 ms (bench/migrate --rounds 5). An idle guest pays one more pass of a few pages, and
 * none once a sync finds no page at all.
 */
export const SETTLE_SHRINK = 0.75;
export const MAX_SETTLE_PASSES = 4;

/**
 * How many times the source waits, its guest running, for the destination to have applied every pass
 * sent before it stops the guest (PrecopySender's CATCH_UP_MAX_MS says why, and how long each wait may take).
 */
export const MAX_CATCH_UPS = 3;

/** What one live sync found, and what the migration knows then. */
export interface SyncFacts {
  /** Dirty pages the sync took. */
  readonly pages: number;
  /** Those pages' bytes at the link's measured bandwidth, in ms (Infinity before any measure). */
  readonly expectedDowntimeMs: number;
  readonly downtimeLimitMs: number;
  /** Passes ended so far (pass 1 sends every page). */
  readonly passes: number;
  /** The last pass the destination has said it applied (APPLIED). */
  readonly appliedPass: number;
  /** Whether the auto-converge capability is on. */
  readonly autoConverge: boolean;
  /** Bytes/s the guest dirtied since the sync before. */
  readonly dirtyBytesPerSecond: number;
  /** Bytes/s the link carried, as last measured. */
  readonly linkBytesPerSecond: number;
  /** The throttle the vCPUs run under now (0-99). */
  readonly throttlePercent: number;
}

/**
 * What to do with the pages a sync took:
 * - 'switch-over': stop the guest and send them in the pause;
 * - 'send': send them live and sync again, first setting the throttle to `throttlePercent` if given;
 * - 'catch-up': send them live, then wait for the destination to apply every pass, and sync again.
 */
export type PassDecision =
  | { readonly kind: 'switch-over' }
  | { readonly kind: 'send'; readonly throttlePercent?: number }
  | { readonly kind: 'catch-up' };

/** The decision after each live sync of one migration (see the module header). One per migration. */
export class ConvergencePolicy {
  /** What the last sync found; unknown before the first (pass 1 sent every page), so a first fit always settles. */
  private previousPages = Infinity;
  private settlePasses = 0;
  private catchUps = 0;

  afterSync(facts: SyncFacts): PassDecision {
    const shrinking = facts.pages <= SETTLE_SHRINK * this.previousPages;
    this.previousPages = facts.pages;
    if (facts.expectedDowntimeMs > facts.downtimeLimitMs) {
      if (facts.passes >= THROTTLE_AFTER_PASSES && facts.autoConverge) {
        return { kind: 'send', throttlePercent: nextThrottle(facts.throttlePercent, facts.dirtyBytesPerSecond, facts.linkBytesPerSecond) };
      }
      return { kind: 'send' };
    }
    // It fits the limit. But while the dirty set still shrinks pass after pass (the guest dirties
    // slower than the link carries), another live pass shortens the pause for the price of a pass
    // the guest runs through. A settling guest needs no more throttle than it has. An empty set has
    // nothing left to shrink.
    if (facts.pages > 0 && shrinking && this.settlePasses < MAX_SETTLE_PASSES) {
      this.settlePasses++;
      return { kind: 'send' };
    }
    // The destination may still be applying earlier passes, which the stopped guest would wait for
    // too: send these pages live, wait for it to catch up, and sync again.
    if (facts.appliedPass >= facts.passes || this.catchUps >= MAX_CATCH_UPS) return { kind: 'switch-over' };
    this.catchUps++;
    return { kind: 'catch-up' };
  }
}

/**
 * The throttle for the next pass, given the bytes/s the guest dirtied since the last sync: QEMU's
 * steps (20% first, then 10 points more each pass), or more when the guest dirties so fast that
 * stepping would take many passes: the share that brings its dirty rate, as it would be unthrottled,
 * down to half of what the link carried. Half, as QEMU's throttle-trigger-threshold (50%): a pass
 * then finds at most half as much to send as the one before. Measured dirty rates only understate
 * (a page dirtied twice counts once), so this never throttles more than the guest's own rate asks.
 */
export function nextThrottle(currentPercent: number, dirtyBytesPerSecond: number, linkBytesPerSecond: number): number {
  const stepped = currentPercent === 0 ? 20 : currentPercent + 10;
  const unthrottled = dirtyBytesPerSecond / (1 - currentPercent / 100);
  const runShare = unthrottled > 0 ? Math.min(1, (0.5 * linkBytesPerSecond) / unthrottled) : 1;
  return Math.min(99, Math.max(stepped, Math.round(100 * (1 - runShare))));
}
