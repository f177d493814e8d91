import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { addon } from '../../kvm/addon.js';
import type { FdWatcher } from './fd-watcher.js';
import type { NetBackend } from './virtio-net.js';

/** A --net option that cannot be used (bad address, port taken, no tap device). */
export class NetError extends Error {
  override name = 'NetError';
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * One Ethernet frame per UDP datagram between `local` and `remote`, like QEMU's `-netdev dgram`
 * (and the older `-netdev socket,udp=`): for hosts where tap is not available, and for tests.
 */
export class UdpNetBackend implements NetBackend {
  private deliver: (frame: Uint8Array) => void = () => {};
  readonly description: string;

  private constructor(private readonly socket: Socket, private readonly remote: HostPort, local: HostPort) {
    this.description = `udp ${local.host}:${local.port} -> ${remote.host}:${remote.port}`;
    socket.on('message', (frame) => this.deliver(new Uint8Array(frame.buffer, frame.byteOffset, frame.length)));
    // A peer that is not listening yet makes sends fail with ECONNREFUSED on some paths: a lost frame.
    socket.on('error', () => {});
  }

  /** Binds `local`; a bind failure is a NetError naming the address. */
  static async open(local: HostPort, remote: HostPort): Promise<UdpNetBackend> {
    const socket = createSocket({ type: isIPv6(local.host) ? 'udp6' : 'udp4' });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (e) => reject(new NetError(`--net udp: cannot bind ${local.host}:${local.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
      socket.bind(local.port, local.host, () => resolve());
    });
    socket.removeAllListeners('error');
    // Datagrams queue in the kernel while the guest is slow; give bursts room.
    try {
      socket.setRecvBufferSize(4 * 1024 * 1024);
      socket.setSendBufferSize(4 * 1024 * 1024);
    } catch { /* the kernel's limits apply */ }
    return new UdpNetBackend(socket, remote, local);
  }

  send(frame: Uint8Array): void {
    this.socket.send(frame, this.remote.port, this.remote.host);
  }

  onReceive(deliver: (frame: Uint8Array) => void): void {
    this.deliver = deliver;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

/** <linux/if_tun.h>: a tap (Ethernet) device, without the 4-byte packet-information prefix. */
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;

/**
 * A tap device (Documentation/networking/tuntap.rst), opened through /dev/net/tun and TUNSETIFF.
 * Frames are read on the main thread when its event loop says the fd is readable (FdWatcher: one read
 * per frame, never on libuv's threadpool)
 * and written with write(2), which never blocks on a tap: the kernel queues or drops.
 */
export class TapNetBackend implements NetBackend {
  private deliver: (frame: Uint8Array) => void = () => {};
  readonly description: string;

  private constructor(private readonly fd: number, readonly ifname: string) {
    this.description = `tap ${ifname}`;
  }

  static open(ifname: string): TapNetBackend {
    const native = addon();
    let fd: number;
    try {
      fd = native.open('/dev/net/tun');
    } catch (e) {
      throw new NetError(`--net tap: cannot open /dev/net/tun (${(e as { code?: string }).code ?? (e as Error).message}); load the tun module or run with CAP_NET_ADMIN`);
    }
    let name: string;
    try {
      name = native.tunSetIff(fd, ifname, IFF_TAP | IFF_NO_PI);
    } catch (e) {
      native.close(fd);
      const code = (e as { code?: string }).code;
      throw new NetError(`--net tap,ifname=${ifname}: TUNSETIFF failed (${code ?? (e as Error).message})${code === 'EPERM' ? '; creating a tap needs CAP_NET_ADMIN' : code === 'EBUSY' ? '; another process holds that tap' : ''}`);
    }
    return new TapNetBackend(fd, name);
  }

  attach(watcher: FdWatcher): void {
    watcher.watchFrames(this.fd, (frame) => this.deliver(frame));
  }

  send(frame: Uint8Array): void {
    try {
      addon().write(this.fd, frame);
    } catch {
      // The interface is down or its queue is full: the frame is lost, as on a wire.
    }
  }

  onReceive(deliver: (frame: Uint8Array) => void): void {
    this.deliver = deliver;
  }

  async close(): Promise<void> {
    addon().close(this.fd);
  }
}
