/**
 * Ethernet II frames a test peer sends to and parses from a guest: ARP (Ethernet/IPv4), IPv4 with UDP
 * or ICMP echo. Only what the netecho guest speaks (guests/README.md), built byte by byte so that a
 * test checks the guest against the wire format, not against the guest's own code.
 */

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const BROADCAST_MAC = Buffer.alloc(6, 0xff);
const ETH_HLEN = 14;
const IP_HLEN = 20;
const UDP_HLEN = 8;
const IPPROTO_ICMP = 1;
const IPPROTO_UDP = 17;

export function macToString(mac: Buffer): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function ipToBuffer(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return Buffer.from(parts);
}

export function ipToString(b: Buffer): string {
  return [...b.subarray(0, 4)].join('.');
}

/** RFC 1071 internet checksum (the IPv4 header and ICMP checksum). */
export function inetChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ethernet(dst: Buffer, src: Buffer, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(ETH_HLEN);
  dst.copy(h, 0);
  src.copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

export function arpRequest(srcMac: Buffer, srcIp: string, targetIp: string): Buffer {
  const a = Buffer.alloc(28);
  a.writeUInt16BE(1, 0); // Ethernet
  a.writeUInt16BE(ETH_P_IP, 2);
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(1, 6); // request
  srcMac.copy(a, 8);
  ipToBuffer(srcIp).copy(a, 14);
  ipToBuffer(targetIp).copy(a, 24); // target MAC (18..23) stays zero
  return ethernet(BROADCAST_MAC, srcMac, ETH_P_ARP, a);
}

export interface Ipv4Packet {
  srcMac: Buffer;
  dstMac: Buffer;
  srcIp: string;
  dstIp: string;
  ident?: number;
}

function ipv4(p: Ipv4Packet, proto: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(IP_HLEN);
  h[0] = 0x45;
  h.writeUInt16BE(IP_HLEN + payload.length, 2);
  h.writeUInt16BE((p.ident ?? 0) & 0xffff, 4);
  h[8] = 64;
  h[9] = proto;
  ipToBuffer(p.srcIp).copy(h, 12);
  ipToBuffer(p.dstIp).copy(h, 16);
  h.writeUInt16BE(inetChecksum(h), 10);
  return ethernet(p.dstMac, p.srcMac, ETH_P_IP, Buffer.concat([h, payload]));
}

/** A UDP datagram with checksum 0 ("none", allowed over IPv4). */
export function udpFrame(p: Ipv4Packet & { srcPort: number; dstPort: number; payload: Buffer }): Buffer {
  const u = Buffer.alloc(UDP_HLEN);
  u.writeUInt16BE(p.srcPort, 0);
  u.writeUInt16BE(p.dstPort, 2);
  u.writeUInt16BE(UDP_HLEN + p.payload.length, 4);
  return ipv4(p, IPPROTO_UDP, Buffer.concat([u, p.payload]));
}

export function icmpEchoRequest(p: Ipv4Packet & { id: number; seq: number; data: Buffer }): Buffer {
  const m = Buffer.alloc(8);
  m[0] = 8;
  m.writeUInt16BE(p.id, 4);
  m.writeUInt16BE(p.seq, 6);
  const body = Buffer.concat([m, p.data]);
  body.writeUInt16BE(inetChecksum(body), 2);
  return ipv4(p, IPPROTO_ICMP, body);
}

export type ParsedFrame =
  | { kind: 'arp'; op: number; senderMac: Buffer; senderIp: string; targetMac: Buffer; targetIp: string; dstMac: Buffer }
  | { kind: 'udp'; srcMac: Buffer; dstMac: Buffer; srcIp: string; dstIp: string; srcPort: number; dstPort: number; payload: Buffer }
  | { kind: 'icmp'; srcMac: Buffer; dstMac: Buffer; srcIp: string; dstIp: string; type: number; id: number; seq: number; data: Buffer }
  | { kind: 'other'; reason: string };

/**
 * Parses what a guest sent. IPv4 headers must carry a correct checksum and consistent lengths (a guest
 * that gets them wrong is the bug a test wants to see), so those come back as 'other' with the reason.
 */
export function parseFrame(f: Buffer): ParsedFrame {
  if (f.length < ETH_HLEN) return { kind: 'other', reason: `runt frame of ${f.length} bytes` };
  const dstMac = f.subarray(0, 6);
  const srcMac = f.subarray(6, 12);
  const type = f.readUInt16BE(12);
  const body = f.subarray(ETH_HLEN);
  if (type === ETH_P_ARP) {
    if (body.length < 28) return { kind: 'other', reason: 'short ARP' };
    return {
      kind: 'arp', op: body.readUInt16BE(6), dstMac,
      senderMac: body.subarray(8, 14), senderIp: ipToString(body.subarray(14, 18)),
      targetMac: body.subarray(18, 24), targetIp: ipToString(body.subarray(24, 28)),
    };
  }
  if (type !== ETH_P_IP) return { kind: 'other', reason: `ethertype 0x${type.toString(16)}` };
  if (body.length < IP_HLEN || body[0]! >> 4 !== 4) return { kind: 'other', reason: 'not IPv4' };
  const ihl = (body[0]! & 0xf) * 4;
  const total = body.readUInt16BE(2);
  if (ihl < IP_HLEN || total < ihl || total > body.length) return { kind: 'other', reason: `bad IPv4 lengths ihl=${ihl} total=${total} frame=${body.length}` };
  if (inetChecksum(body.subarray(0, ihl)) !== 0) return { kind: 'other', reason: 'bad IPv4 header checksum' };
  const srcIp = ipToString(body.subarray(12, 16));
  const dstIp = ipToString(body.subarray(16, 20));
  const l4 = body.subarray(ihl, total);
  if (body[9] === IPPROTO_UDP) {
    if (l4.length < UDP_HLEN || l4.readUInt16BE(4) !== l4.length) return { kind: 'other', reason: 'bad UDP length' };
    return { kind: 'udp', srcMac, dstMac, srcIp, dstIp, srcPort: l4.readUInt16BE(0), dstPort: l4.readUInt16BE(2), payload: l4.subarray(UDP_HLEN) };
  }
  if (body[9] === IPPROTO_ICMP) {
    if (l4.length < 8 || inetChecksum(l4) !== 0) return { kind: 'other', reason: 'bad ICMP' };
    return { kind: 'icmp', srcMac, dstMac, srcIp, dstIp, type: l4[0]!, id: l4.readUInt16BE(4), seq: l4.readUInt16BE(6), data: l4.subarray(8) };
  }
  return { kind: 'other', reason: `IP protocol ${body[9]}` };
}

/** netecho's reply payload: the guest's running counter (u64 little-endian), then the request's payload. */
export function parseEchoPayload(p: Buffer): { counter: bigint; echoed: Buffer } {
  if (p.length < 8) throw new Error(`netecho reply of ${p.length} bytes has no counter`);
  return { counter: p.readBigUInt64LE(0), echoed: p.subarray(8) };
}
