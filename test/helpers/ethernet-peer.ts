import dgram from 'node:dgram';
import {
  arpRequest, icmpEchoRequest, macToString, parseEchoPayload, parseFrame, udpFrame, type ParsedFrame,
} from './ethernet-frames.js';

/**
 * A host on the guest's Ethernet, reached over UDP: every datagram carries one raw Ethernet frame, no
 * other framing. That is what QEMU's `-netdev dgram,id=n0,local.type=inet,local.host=H,local.port=P,
 * remote.type=inet,remote.host=H,remote.port=Q` sends and expects (QEMU 7.2: net/dgram.c), and what
 * tsvmm's `--net udp,local=H:P,remote=H:Q` does, so one peer drives both.
 */
export interface EthernetPeerOptions {
  /** Where the VMM's end of the link sends from and expects our frames. */
  remoteHost?: string;
  remotePort: number;
  /** Our end; port 0 picks a free one (read it back from .port). */
  localHost?: string;
  localPort?: number;
  mac?: Buffer;
  ip?: string;
}

export interface ExchangeOptions {
  dstIp: string;
  dstMac: Buffer;
  dstPort: number;
  count: number;
  /** Datagrams in flight at once (keep it below the guest's RX ring). */
  window?: number;
  payloadBytes?: number;
  /** How long to wait for any one reply before calling the rest lost. */
  replyTimeoutMs?: number;
  srcPort?: number;
}

export interface ExchangeReport {
  sent: number;
  received: number;
  lost: number;
  /** Counters in arrival order. */
  counters: bigint[];
  /** First problems seen (a counter out of sequence, a reply not echoing its request), at most 10. */
  errors: string[];
  elapsedMs: number;
}

interface Waiter {
  match: (f: ParsedFrame) => boolean;
  resolve: (f: ParsedFrame) => void;
}

export class EthernetPeer {
  readonly mac: Buffer;
  readonly ip: string;
  /** Frames received that no one has taken yet. */
  private readonly queue: ParsedFrame[] = [];
  private waiter: Waiter | null = null;
  private constructor(
    private readonly socket: dgram.Socket,
    private readonly remoteHost: string,
    private readonly remotePort: number,
    mac: Buffer,
    ip: string,
  ) {
    this.mac = mac;
    this.ip = ip;
    socket.on('message', (m) => this.deliver(parseFrame(m)));
  }

  static async open(o: EthernetPeerOptions): Promise<EthernetPeer> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(o.localPort ?? 0, o.localHost ?? '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    // Deep buffers: a burst of replies must not be dropped by our own socket.
    socket.setRecvBufferSize(4 << 20);
    return new EthernetPeer(socket, o.remoteHost ?? '127.0.0.1', o.remotePort,
      o.mac ?? Buffer.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]), o.ip ?? '10.0.2.2');
  }

  get port(): number {
    return this.socket.address().port;
  }

  send(frame: Buffer): void {
    this.socket.send(frame, this.remotePort, this.remoteHost);
  }

  private deliver(f: ParsedFrame): void {
    if (this.waiter?.match(f)) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve(f);
    } else {
      this.queue.push(f);
    }
  }

  /** The first frame (queued or yet to come) that `match` accepts, or null after timeoutMs. */
  receive<T extends ParsedFrame>(match: (f: ParsedFrame) => f is T, timeoutMs: number): Promise<T | null> {
    const i = this.queue.findIndex(match);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0] as T);
    if (this.waiter) throw new Error('EthernetPeer.receive: one receive at a time');
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve(null);
      }, timeoutMs);
      this.waiter = {
        match,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f as T);
        },
      };
    });
  }

  /** Asks for ip's MAC, repeating the request every retryMs (the guest may not be listening yet). */
  async resolve(ip: string, timeoutMs = 20_000, retryMs = 250): Promise<Buffer> {
    const isReply = (f: ParsedFrame): f is Extract<ParsedFrame, { kind: 'arp' }> =>
      f.kind === 'arp' && f.op === 2 && f.senderIp === ip && f.targetIp === this.ip && f.targetMac.equals(this.mac);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      this.send(arpRequest(this.mac, this.ip, ip));
      const r = await this.receive(isReply, retryMs);
      if (r) return Buffer.from(r.senderMac);
    }
    throw new Error(`no ARP reply for ${ip} from ${macToString(this.mac)} within ${timeoutMs} ms`);
  }

  /** One ICMP echo round trip; null on timeout. */
  async ping(dstIp: string, dstMac: Buffer, seq: number, timeoutMs = 5000): Promise<Extract<ParsedFrame, { kind: 'icmp' }> | null> {
    const data = Buffer.from(`ping ${seq}`);
    this.send(icmpEchoRequest({ srcMac: this.mac, dstMac, srcIp: this.ip, dstIp, id: 0x7473, seq, data }));
    return this.receive((f): f is Extract<ParsedFrame, { kind: 'icmp' }> =>
      f.kind === 'icmp' && f.type === 0 && f.seq === seq && f.srcIp === dstIp && f.data.equals(data), timeoutMs);
  }

  /**
   * Sends `count` datagrams to netecho, `window` in flight, and checks each reply: it must come from
   * dstIp:dstPort to us, echo its request's payload (requests carry their sequence number, so replies
   * are matched to requests in order), and carry the counter after the previous reply's.
   */
  async udpExchange(o: ExchangeOptions): Promise<ExchangeReport> {
    const window = o.window ?? 8;
    const srcPort = o.srcPort ?? 40_000;
    const payloadBytes = Math.max(o.payloadBytes ?? 32, 4);
    const payload = (seq: number) => {
      const p = Buffer.alloc(payloadBytes, seq & 0xff);
      p.writeUInt32LE(seq, 0);
      return p;
    };
    const isReply = (f: ParsedFrame): f is Extract<ParsedFrame, { kind: 'udp' }> =>
      f.kind === 'udp' && f.srcIp === o.dstIp && f.srcPort === o.dstPort && f.dstPort === srcPort && f.dstIp === this.ip;
    const report: ExchangeReport = { sent: 0, received: 0, lost: 0, counters: [], errors: [], elapsedMs: 0 };
    const error = (e: string) => { if (report.errors.length < 10) report.errors.push(e); };
    const t0 = performance.now();
    while (report.received < o.count) {
      while (report.sent < o.count && report.sent - report.received < window) {
        this.send(udpFrame({
          srcMac: this.mac, dstMac: o.dstMac, srcIp: this.ip, dstIp: o.dstIp, ident: report.sent,
          srcPort, dstPort: o.dstPort, payload: payload(report.sent),
        }));
        report.sent++;
      }
      const r = await this.receive(isReply, o.replyTimeoutMs ?? 5000);
      if (!r) break;
      const { counter, echoed } = parseEchoPayload(r.payload);
      const seq = report.received;
      if (!echoed.equals(payload(seq))) error(`reply ${seq} does not echo request ${seq} (got ${echoed.length} bytes starting ${echoed.subarray(0, 8).toString('hex')})`);
      const prev = report.counters[report.counters.length - 1];
      if (prev !== undefined && counter !== prev + 1n) error(`reply ${seq}: counter ${counter} after ${prev}`);
      report.counters.push(counter);
      report.received++;
    }
    report.elapsedMs = performance.now() - t0;
    report.lost = report.sent - report.received;
    return report;
  }

  close(): void {
    this.socket.close();
  }
}

/** A UDP port on host that is free right now (for the VMM's end of the link; it binds it itself). */
export async function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  return (await freeUdpPorts(1, host))[0]!;
}

/**
 * `count` UDP ports on host, free right now and distinct: all are held at once while they are picked.
 * Picked one after another, a port just let go can come back as the next one (or as the port of a
 * socket bound to port 0 later), and two ends of a test's link then clash (EADDRINUSE).
 */
export async function freeUdpPorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const probes = Array.from({ length: count }, () => dgram.createSocket('udp4'));
  await Promise.all(probes.map((s) => new Promise<void>((resolve) => s.bind(0, host, resolve))));
  const ports = probes.map((s) => s.address().port);
  await Promise.all(probes.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}
