import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { FdWatcher } from '../../../../src/devices/virtio/fd-watcher.js';
import { NetError, UdpNetBackend } from '../../../../src/devices/virtio/net-backends.js';
import { sockaddr, sockaddrFamily } from '../../../../src/devices/virtio/sockaddr.js';
import { until } from './test-driver.js';

/** A node:dgram peer bound to a free port of `host`. */
async function peer(host: string): Promise<{ socket: DgramSocket; port: number; got: { data: Buffer; port: number }[] }> {
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((r) => socket.bind(0, host, r));
  const got: { data: Buffer; port: number }[] = [];
  socket.on('message', (data, rinfo) => got.push({ data, port: rinfo.port }));
  return { socket, port: socket.address().port, got };
}

/** A port of `host` free a moment ago. */
async function freePort(host: string): Promise<number> {
  const { socket, port } = await peer(host);
  await new Promise<void>((r) => socket.close(() => r()));
  return port;
}

describe('sockaddr', () => {
  it('lays out sockaddr_in: family (host order), port and address (network order), zero padding', () => {
    expect([...sockaddr('127.0.0.1', 0x1234)]).toEqual([2, 0, 0x12, 0x34, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('lays out sockaddr_in6 for full, shortened and IPv4-mapped literals', () => {
    const addr = (host: string) => [...sockaddr(host, 7).subarray(8, 24)];
    const hex = (s: string) => s.match(/../g)!.map((h) => parseInt(h, 16));
    expect([...sockaddr('::1', 7).subarray(0, 8)]).toEqual([10, 0, 0, 7, 0, 0, 0, 0]);
    expect(sockaddr('::1', 7).length).toBe(28);
    expect(sockaddrFamily(sockaddr('::1', 7))).toBe(10);
    expect(sockaddrFamily(sockaddr('127.0.0.1', 7))).toBe(2);
    expect(addr('::1')).toEqual(hex('00000000000000000000000000000001'));
    expect(addr('::')).toEqual(hex('00000000000000000000000000000000'));
    expect(addr('fe80::1:2')).toEqual(hex('fe800000000000000000000000010002'));
    expect(addr('2001:db8:0:0:1:0:0:1')).toEqual(hex('20010db8000000000001000000000001'));
    expect(addr('2001:db8::')).toEqual(hex('20010db8000000000000000000000000'));
    expect(addr('::ffff:127.0.0.1')).toEqual(hex('00000000000000000000ffff7f000001'));
  });

  it('refuses what is not an IP literal or a port', () => {
    expect(() => sockaddr('localhost', 1)).toThrow(/not an IP address/);
    expect(() => sockaddr('127.0.0.1', 65536)).toThrow(RangeError);
    expect(() => sockaddr('fe80::1%eth0', 1)).toThrow(/zone id/);
  });
});

describe('UdpNetBackend', () => {
  it.each(['127.0.0.1', '::1'])('exchanges one frame per datagram over %s, sending from local to remote and hearing any sender', async (host) => {
    const remote = await peer(host);
    const stranger = await peer(host);
    const localPort = await freePort(host);
    const backend = await UdpNetBackend.open({ host, port: localPort }, { host, port: remote.port });
    const watcher = new FdWatcher();
    const frames: number[][] = [];
    backend.onReceive((f) => frames.push([...f]));
    backend.attach(watcher);
    watcher.start((m) => { throw new Error(m); });
    try {
      expect(backend.description).toBe(`udp ${host}:${localPort} -> ${host}:${remote.port}`);
      backend.send(new Uint8Array([1, 2, 3]));
      await until(() => remote.got.length === 1);
      expect([...remote.got[0]!.data]).toEqual([1, 2, 3]);
      expect(remote.got[0]!.port).toBe(localPort); // sent from the bound local port
      // Three datagrams before the loop looks: three frames, boundaries kept, in order.
      for (const n of [4, 5, 6]) remote.socket.send(Buffer.from([n, n]), localPort, host);
      await until(() => frames.length === 3);
      stranger.socket.send(Buffer.from([9]), localPort, host); // not connected: anyone may send
      await until(() => frames.length === 4);
      expect(frames).toEqual([[4, 4], [5, 5], [6, 6], [9]]);
    } finally {
      await watcher.stop();
      await backend.close();
      remote.socket.close();
      stranger.socket.close();
    }
  });

  it('names a port in use, and mixed address families, as NetErrors', async () => {
    const taken = await peer('127.0.0.1');
    try {
      const open = UdpNetBackend.open({ host: '127.0.0.1', port: taken.port }, { host: '127.0.0.1', port: 9 });
      await expect(open).rejects.toThrow(NetError);
      await expect(UdpNetBackend.open({ host: '127.0.0.1', port: taken.port }, { host: '127.0.0.1', port: 9 }))
        .rejects.toThrow(`--net udp: cannot bind 127.0.0.1:${taken.port}: EADDRINUSE`);
      await expect(UdpNetBackend.open({ host: '127.0.0.1', port: 0 }, { host: '::1', port: 9 })).rejects.toThrow(/must both be IPv4 or both IPv6/);
      await expect(UdpNetBackend.open({ host: 'fe80::1%lo', port: 0 }, { host: '::1', port: 9 })).rejects.toThrow("--net udp: 'fe80::1%lo' has a zone id");
    } finally {
      taken.socket.close();
    }
  });
});
