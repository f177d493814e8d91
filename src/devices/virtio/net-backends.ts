import { addon } from '../../kvm/addon.js';
import { Socket, SockOpt } from '../../kvm/constants.js';
import type { KvmError } from '../../kvm/kvm-error.js';
import { sockaddr, sockaddrFamily } from './sockaddr.js';
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
 * (and the older `-netdev socket,udp=`): for hosts where tap is not available, and for tests. Frames
 * come from anyone who sends to `local` (the socket is not connected), and go to `remote`.
 *
 * The socket is the addon's, not node:dgram's: datagrams are read on the main thread when the fd
 * watcher says the socket is readable, and sent with one sendto(2). node:dgram resolved the address
 * of every send (a lookup and a process.nextTick even for an IP literal) and wrapped every received
 * datagram in a Buffer and an event: in nested KVM, about a fifth of the main thread's time per
 * bench/virtio UDP round trip.
 */
export class UdpNetBackend implements NetBackend {
  private deliver: (frame: Uint8Array) => void = () => {};
  readonly description: string;

  private constructor(private readonly fd: number, private readonly remoteAddr: Uint8Array, local: HostPort, remote: HostPort) {
    this.description = `udp ${local.host}:${local.port} -> ${remote.host}:${remote.port}`;
  }

  /** Binds `local`; a bind failure is a NetError naming the address. */
  static async open(local: HostPort, remote: HostPort): Promise<UdpNetBackend> {
    const native = addon();
    let localAddr: Uint8Array;
    let remoteAddr: Uint8Array;
    try {
      localAddr = sockaddr(local.host, local.port);
      remoteAddr = sockaddr(remote.host, remote.port);
    } catch (e) {
      throw new NetError(`--net udp: ${(e as Error).message.replace(/^sockaddr: /, '')}`);
    }
    const family = sockaddrFamily(localAddr);
    if (sockaddrFamily(remoteAddr) !== family) {
      throw new NetError(`--net udp: local ${local.host} and remote ${remote.host} must both be IPv4 or both IPv6`);
    }
    const fd = native.socket(family, Socket.SOCK_DGRAM | Socket.SOCK_NONBLOCK | Socket.SOCK_CLOEXEC, 0);
    try {
      native.bind(fd, localAddr);
    } catch (e) {
      native.close(fd);
      throw new NetError(`--net udp: cannot bind ${local.host}:${local.port}: ${(e as KvmError).code ?? (e as Error).message}`);
    }
    // Datagrams queue in the kernel while the guest is slow; give bursts room.
    for (const opt of [SockOpt.SO_RCVBUF, SockOpt.SO_SNDBUF]) {
      try {
        native.setsockoptInt(fd, SockOpt.SOL_SOCKET, opt, 4 * 1024 * 1024);
      } catch { /* the kernel's limits apply */ }
    }
    return new UdpNetBackend(fd, remoteAddr, local, remote);
  }

  attach(watcher: FdWatcher): void {
    watcher.watchFrames(this.fd, (frame) => this.deliver(frame));
  }

  send(frame: Uint8Array): void {
    try {
      addon().sendto(this.fd, frame, this.remoteAddr);
    } catch {
      // The socket buffer is full (EAGAIN) or the route is gone: the frame is lost, as on a wire.
      // (An unconnected socket hears no ICMP errors, so nobody listening at remote is silent.)
    }
  }

  onReceive(deliver: (frame: Uint8Array) => void): void {
    this.deliver = deliver;
  }

  async close(): Promise<void> {
    addon().close(this.fd);
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
