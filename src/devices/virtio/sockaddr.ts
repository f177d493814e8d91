import { isIPv4, isIPv6 } from 'node:net';
import { Socket } from '../../kvm/constants.js';

/**
 * struct sockaddr_in / sockaddr_in6 bytes for an IP literal and port (<netinet/in.h>): what the addon's
 * bind and sendto take. The family is host-endian (little on x86-64), port and address network order.
 */
export function sockaddr(host: string, port: number): Uint8Array {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`sockaddr: port ${port} is not 0 to 65535`);
  if (isIPv4(host)) {
    const b = new Uint8Array(16); // family, port, 4 address bytes, 8 of zero padding
    const v = new DataView(b.buffer);
    v.setUint16(0, Socket.AF_INET, true);
    v.setUint16(2, port, false);
    b.set(host.split('.').map(Number), 4);
    return b;
  }
  if (isIPv6(host)) {
    if (host.includes('%')) throw new RangeError(`sockaddr: '${host}' has a zone id, which is not supported (use a global address)`);
    const b = new Uint8Array(28); // family, port, flowinfo, 16 address bytes, scope id
    const v = new DataView(b.buffer);
    v.setUint16(0, Socket.AF_INET6, true);
    v.setUint16(2, port, false);
    b.set(ipv6Bytes(host), 8);
    return b;
  }
  throw new RangeError(`sockaddr: '${host}' is not an IP address`);
}

/** The address family (Socket.AF_INET or AF_INET6) a sockaddr() result is laid out for. */
export function sockaddrFamily(addr: Uint8Array): number {
  return new DataView(addr.buffer, addr.byteOffset, addr.byteLength).getUint16(0, true);
}

/** The 16 bytes of an IPv6 literal (isIPv6 says it is one: `::` shorthand and a dotted IPv4 tail allowed). */
function ipv6Bytes(host: string): Uint8Array {
  // A trailing dotted IPv4 part (::ffff:127.0.0.1) becomes its two hex groups.
  const text = host.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a: string, b: string, c: string, d: string) =>
    `${((Number(a) << 8) | Number(b)).toString(16)}:${((Number(c) << 8) | Number(d)).toString(16)}`);
  const [head, tail] = text.split('::') as [string, string | undefined];
  const groups = (s: string | undefined) => (s === undefined || s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const before = groups(head);
  const after = groups(tail);
  const all = tail === undefined ? before : [...before, ...new Array<number>(8 - before.length - after.length).fill(0), ...after];
  const b = new Uint8Array(16);
  all.forEach((g, i) => { b[2 * i] = g >> 8; b[2 * i + 1] = g & 0xff; });
  return b;
}
