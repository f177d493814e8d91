import { describe, expect, it } from 'vitest';
import { formatBytes, parseMemorySize } from '../../../src/cli/parse-size.js';
import { stopStatus } from '../../../src/cli/main.js';

describe('parseMemorySize', () => {
  it('reads QEMU-style sizes, a bare number being MiB', () => {
    expect(parseMemorySize('256M')).toBe(256 * 2 ** 20);
    expect(parseMemorySize('256')).toBe(256 * 2 ** 20);
    expect(parseMemorySize('1G')).toBe(2 ** 30);
    expect(parseMemorySize('1GiB')).toBe(2 ** 30);
    expect(parseMemorySize('1.5g')).toBe(1.5 * 2 ** 30);
    expect(parseMemorySize('4096K')).toBe(4096 * 1024);
    expect(parseMemorySize('8192B')).toBe(8192);
  });

  it('refuses what does not parse or is not whole pages, quoting the input', () => {
    expect(() => parseMemorySize('lots')).toThrow(/'lots'/);
    expect(() => parseMemorySize('1x')).toThrow(/cannot parse/);
    expect(() => parseMemorySize('0')).toThrow(/positive/);
    expect(() => parseMemorySize('100B')).toThrow(/4 KiB/);
    expect(() => parseMemorySize('-1M')).toThrow(/cannot parse/);
  });

  it('formats sizes for messages', () => {
    expect(formatBytes(256 * 2 ** 20)).toBe('256 MiB');
    expect(formatBytes(1.5 * 2 ** 30)).toBe('1.5 GiB');
  });
});

describe('stopStatus', () => {
  it('maps guest stops to exit statuses: debug-exit odd, power-off 0, crash 6', () => {
    expect(stopStatus({ kind: 'guest-exit', status: 15 }).status).toBe(15);
    expect(stopStatus({ kind: 'guest-exit', status: 0x1ff }).status).toBe(0xff);
    expect(stopStatus({ kind: 'poweroff' }).status).toBe(0);
    expect(stopStatus({ kind: 'shutdown' })).toEqual({ status: 6, note: 'guest triple-faulted (KVM_EXIT_SHUTDOWN)' });
    expect(stopStatus(undefined).status).toBe(0);
  });
});
