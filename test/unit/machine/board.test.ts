import { describe, expect, it } from 'vitest';
import { BOARD_DEVICES, buildBuses, newBoard } from '../../../src/machine/board.js';
import type { VcpuStop } from '../../../src/vcpu/exit-handler.js';

describe('the board', () => {
  it('places the i8042 at 0x60/0x64 and the RTC at 0x70/0x71, and names them for migration peers', () => {
    const stops: VcpuStop[] = [];
    const { pio } = buildBuses(newBoard(-1, 2), { requestStop: (s) => stops.push(s), transmit: () => {} });
    expect(pio.describe()).toEqual(expect.arrayContaining([
      { name: 'i8042', base: 0x60, length: 5 },
      { name: 'rtc (MC146818)', base: 0x70, length: 2 },
    ]));
    expect(BOARD_DEVICES).toEqual(expect.arrayContaining(['i8042@0x60', 'mc146818-rtc@0x70']));
    pio.write(0x70, 1, 0x0d);
    expect(pio.read(0x71, 1)).toBe(0x80); // RTC register D: valid RAM and time
    pio.write(0x64, 1, 0xfe); // Linux reboot=k
    expect(stops).toEqual([{ kind: 'reset' }]);
  });
});
