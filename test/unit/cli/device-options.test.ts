import { describe, expect, it } from 'vitest';
import { DeviceOptionError, parseDiskOption, parseNetOption } from '../../../src/cli/device-options.js';

describe('--disk and --net values', () => {
  it('parses a disk with and without readonly', () => {
    expect(parseDiskOption('a.img')).toEqual({ kind: 'disk', path: 'a.img', readOnly: false });
    expect(parseDiskOption('/x/a.img,readonly')).toEqual({ kind: 'disk', path: '/x/a.img', readOnly: true });
    expect(() => parseDiskOption(',readonly')).toThrow(DeviceOptionError);
  });

  it('parses udp and tap NICs, with the default or a given MAC', () => {
    expect(parseNetOption('udp,local=127.0.0.1:5000,remote=127.0.0.1:5001')).toEqual({
      kind: 'net-udp', local: { host: '127.0.0.1', port: 5000 }, remote: { host: '127.0.0.1', port: 5001 },
      mac: Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56),
    });
    expect(parseNetOption('udp,local=[::1]:5000,remote=[::1]:5001').kind).toBe('net-udp');
    expect(parseNetOption('tap,ifname=tsvmm0,mac=02:00:00:aa:bb:cc')).toEqual({ kind: 'net-tap', ifname: 'tsvmm0', mac: Uint8Array.of(2, 0, 0, 0xaa, 0xbb, 0xcc) });
  });

  it.each([
    ['udp,local=127.0.0.1:0,remote=127.0.0.1:1', /port must be 1 to 65535/],
    ['udp,local=127.0.0.1:5,remote=127.0.0.1:6,ifname=x', /unknown option 'ifname' for udp/],
    ['tap,ifname=' + 'x'.repeat(16), /1 to 15 characters/],
    ['tap,ifname=t0,mac=zz:00:00:00:00:00', /not a MAC address/],
    ['tap,ifname', /not KEY=VALUE/],
  ])('refuses %s', (value, message) => {
    expect(() => parseNetOption(value)).toThrow(message);
  });
});
