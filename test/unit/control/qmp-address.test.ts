import { describe, expect, it } from 'vitest';
import { AddressError, formatSocketAddress, parseSocketAddress } from '../../../src/control/qmp-address.js';

describe('parseSocketAddress', () => {
  it('reads unix:PATH and tcp:HOST:PORT, IPv6 in brackets', () => {
    expect(parseSocketAddress('unix:/run/tsvmm.qmp')).toEqual({ kind: 'unix', path: '/run/tsvmm.qmp' });
    expect(parseSocketAddress('unix:rel/path')).toEqual({ kind: 'unix', path: 'rel/path' });
    expect(parseSocketAddress('tcp:127.0.0.1:4444')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 4444 });
    expect(parseSocketAddress('tcp:dst.example:1')).toEqual({ kind: 'tcp', host: 'dst.example', port: 1 });
    expect(parseSocketAddress('tcp:[::1]:65535')).toEqual({ kind: 'tcp', host: '::1', port: 65535 });
  });

  it('allows port 0 (any free port) only for listening', () => {
    expect(parseSocketAddress('tcp:127.0.0.1:0', { listening: true })).toMatchObject({ port: 0 });
    expect(() => parseSocketAddress('tcp:127.0.0.1:0')).toThrow(/port 0 is not between 1 and 65535/);
  });

  it.each([
    ['unix:', /has no path/],
    [`unix:/${'x'.repeat(120)}`, /at most 107 bytes/],
    ['tcp:4444', /not tcp:HOST:PORT/],
    ['tcp::4444', /not tcp:HOST:PORT/],
    ['tcp:host:port', /not tcp:HOST:PORT/],
    ['tcp:::1:4444', /not tcp:HOST:PORT/],
    ['tcp:host:65536', /65536 is not between/],
    ['tcp:host:123456', /not tcp:HOST:PORT/],
    ['/tmp/qmp.sock', /neither unix:PATH nor tcp:HOST:PORT/],
    ['exec:cat', /neither/],
  ])('refuses %j, quoting it', (text, message) => {
    expect(() => parseSocketAddress(text)).toThrow(AddressError);
    expect(() => parseSocketAddress(text)).toThrow(message);
  });

  it('formats back to the same text', () => {
    for (const text of ['unix:/a/b', 'tcp:10.0.0.2:4444', 'tcp:[::1]:4444']) {
      expect(formatSocketAddress(parseSocketAddress(text))).toBe(text);
    }
  });
});
