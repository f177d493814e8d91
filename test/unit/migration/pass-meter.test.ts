// PassMeter: the running figures of a pass, and the whole-pass figure the switch-over decision uses.
import { describe, expect, it } from 'vitest';
import { MIN_MEASURED_PASS_BYTES, PassMeter } from '../../../src/migration/pass-meter.js';

const MiB = 1024 * 1024;

describe('PassMeter', () => {
  it('gives the running rates of the pass under way until a whole pass has measured the link, then that pass', () => {
    const meter = new PassMeter();
    expect(meter.bytesPerSecond).toBe(0);
    meter.startPass(1000, 0, 0);
    expect(meter.afterBatch(1100, 10 * MiB, 2560)).toEqual({ seconds: 0.1, bytes: 10 * MiB });
    expect(meter.bytesPerSecond).toBe(100 * MiB);
    expect(meter.pagesPerSecond).toBe(25600);
    meter.afterBatch(1200, 30 * MiB, 7680);
    expect(meter.bytesPerSecond).toBe(150 * MiB);
    meter.endPass(1250, 40 * MiB);
    expect(meter.bytesPerSecond).toBe(160 * MiB); // 40 MiB in 250 ms, whole
    // The next pass's running figures no longer decide the link's.
    meter.startPass(2000, 40 * MiB, 10240);
    meter.afterBatch(2100, 41 * MiB, 10496);
    expect(meter.bytesPerSecond).toBe(160 * MiB);
    expect(meter.pagesPerSecond).toBe(2560);
  });

  it('keeps the last figure over a pass too small to measure the link, unless there is none yet', () => {
    const meter = new PassMeter();
    meter.startPass(0, 0, 0);
    meter.endPass(100, 4096); // the first: better than none
    expect(meter.bytesPerSecond).toBe(40960);
    meter.startPass(200, 4096, 1);
    meter.endPass(300, 4096 + MIN_MEASURED_PASS_BYTES);
    expect(meter.bytesPerSecond).toBe(MIN_MEASURED_PASS_BYTES * 10);
    meter.startPass(400, 0, 0);
    meter.endPass(401, MIN_MEASURED_PASS_BYTES - 1); // fixed costs, not the link: kept out
    expect(meter.bytesPerSecond).toBe(MIN_MEASURED_PASS_BYTES * 10);
  });

  it('counts a batch in the same millisecond as taking 1 ms, and a pass as at least 0.1 ms', () => {
    const meter = new PassMeter();
    meter.startPass(5, 0, 0);
    expect(meter.afterBatch(5, MiB, 256).seconds).toBe(0.001);
    meter.endPass(5, MIN_MEASURED_PASS_BYTES);
    expect(meter.bytesPerSecond).toBe(MIN_MEASURED_PASS_BYTES / 0.0001);
  });
});
