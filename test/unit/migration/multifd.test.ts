// Multifd without KVM: real loopback TCP, real channel worker threads, real guest-memory mappings
// (views of one private mapping), and the receiver's state machine; only the vCPUs are absent.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../src/arch/x86/layout.js';
import type { GuestMemory } from '../../../src/memory/guest-memory.js';
import { MultifdChannels } from '../../../src/migration/multifd-channels.js';
import { PrecopySender } from '../../../src/migration/precopy-sender.js';
import { channelRecord, multifdRecord, syncRecord } from '../../../src/migration/multifd.js';
import { StreamChecksum } from '../../../src/migration/stream-checksum.js';
import { endRecord, headerRecord, record, u32Record, RecordType } from '../../../src/migration/protocol.js';
import { RecordReader } from '../../../src/migration/record-reader.js';
import { stateRecord } from '../../../src/migration/state-record.js';
import { encodeRamRecord } from '../../../src/migration/ram-record.js';
import { parseTlsCredsObject, secureClient, secureServer } from '../../../src/migration/tls.js';
import { fixedDirtySource, senderParams } from '../../helpers/fixed-dirty-source.js';
import { disposables } from '../../helpers/disposables.js';
import { connectTo, destinationOf, loopbackDestination } from '../../helpers/loopback-destination.js';
import { makeCa, makeCreds } from '../../helpers/tls-certs.js';

const MEM = 8 * MiB;
const cleanup = disposables();
const memory = () => cleanup.memory(MEM);

const destination = destinationOf;

/** The main connection's records, with END's count and XXH3 over everything before it; answers LOADED with COMMIT, as a source does. */
class MainStream {
  private readonly checksum = new StreamChecksum();
  private readonly answers = new RecordReader();
  constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.answers.push(d);
      for (let r = this.answers.next(); r !== undefined; r = this.answers.next()) {
        if (r.type === RecordType.LOADED) socket.write(record(RecordType.COMMIT, new Uint8Array(0)));
      }
    });
  }
  send(buf: Buffer): void {
    this.checksum.update(buf);
    this.socket.write(buf);
  }
  end(): void {
    this.socket.write(endRecord(this.checksum.bytes, this.checksum.value));
  }
}

/** A channel connection written by hand, so a test can choose what arrives when. */
class HandChannel {
  private readonly checksum = new StreamChecksum();
  readonly chunks: Buffer[] = [];
  add(buf: Buffer): this {
    this.checksum.update(buf);
    this.chunks.push(buf);
    return this;
  }
  sync(pass: number): this {
    return this.add(syncRecord(pass, this.checksum.bytes, this.checksum.value));
  }
}

const incoming = (dst: GuestMemory, secure?: (s: net.Socket) => Promise<net.Socket>) => loopbackDestination(dst, cleanup, secure);


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PAGE = 5;

function pageRecord(src: GuestMemory, fill: number): Buffer {
  src.fill(gpa(PAGE * 4096), 4096, fill);
  return encodeRamRecord(0, new Uint8Array(src.read(gpa(0), 16 * 4096)), [PAGE], { zero: 0, data: 0 });
}

describe('multifd', () => {
  it('a page resent in pass 2 over another channel is never overtaken by its pass-1 copy (the SYNC barrier)', async () => {
    const dst = memory();
    const { listener, received } = await incoming(dst);
    const session = randomBytes(16);
    const scratch = memory();
    const ch0 = new HandChannel().add(channelRecord(session, 0)).add(pageRecord(scratch, 0xaa)).sync(1).sync(2);
    const ch1 = new HandChannel().add(channelRecord(session, 1)).sync(1).add(pageRecord(scratch, 0xbb)).sync(2);

    const mainSocket = await connectTo(listener.port);
    const main = new MainStream(mainSocket);
    main.send(headerRecord(destination(dst).shape()));
    main.send(multifdRecord(2, session));
    const [s0, s1] = [await connectTo(listener.port), await connectTo(listener.port)];
    // Channel 1's pass 2 arrives well before channel 0's pass 1: only the barrier keeps the order.
    s1.write(Buffer.concat(ch1.chunks));
    await sleep(200);
    s0.write(Buffer.concat(ch0.chunks));
    main.send(u32Record(RecordType.PASS_END, 1));
    main.send(u32Record(RecordType.PASS_END, 2));
    main.send(stateRecord('vm', {}));
    main.end();
    await received;
    expect(dst.read(gpa(PAGE * 4096), 4096).every((b) => b === 0xbb)).toBe(true);
    [mainSocket, s0, s1].forEach((s) => s.destroy());
  });

  it('a channel whose bytes do not match its SYNC checksum is refused', async () => {
    const dst = memory();
    const { listener, received } = await incoming(dst);
    const session = randomBytes(16);
    const ch0 = new HandChannel().add(channelRecord(session, 0)).add(pageRecord(memory(), 0xaa)).sync(1);
    const wire = Buffer.concat(ch0.chunks);
    wire[wire.length - 100] ^= 1; // a flipped bit inside the page data
    const mainSocket = await connectTo(listener.port);
    const main = new MainStream(mainSocket);
    main.send(headerRecord(destination(dst).shape()));
    main.send(multifdRecord(1, session));
    (await connectTo(listener.port)).write(wire);
    await expect(received).rejects.toThrow(/multifd channel 0 is corrupt: its SYNC 1 checksum does not match/);
    mainSocket.destroy();
  });

  it.each([false, true])('channel worker threads carry a whole RAM image (TLS %s); the destination equals the source byte for byte; over plain TCP, runs of data are read straight into guest memory', async (withTls) => {
    const src = memory();
    // Runs of 32 data pages (128 KiB, long enough to be read straight into guest memory), then 16 zero pages.
    const isData = (page: number) => page % 48 < 32;
    for (let page = 0; page < MEM / 4096; page++) if (isData(page)) src.write(gpa(page * 4096), randomBytes(4096));
    const dst = memory();
    const ca = makeCa('multifd');
    const serverCreds = parseTlsCredsObject(`tls-creds-x509,id=t,dir=${makeCreds(ca, 'server', ['127.0.0.1'])},endpoint=server`);
    const clientCreds = parseTlsCredsObject(`tls-creds-x509,id=t,dir=${makeCreds(ca, 'client', ['src'])},endpoint=client`);
    const { uri, listener, received } = await incoming(dst, withTls ? (s) => secureServer(s, serverCreds) : undefined);
    const tcp = await connectTo(listener.port);
    const mainSocket = withTls ? await secureClient(tcp, clientCreds, '127.0.0.1') : tcp;
    const main = new MainStream(mainSocket);
    main.send(headerRecord(destination(dst).shape()));
    const session = randomBytes(16);
    const channels = await MultifdChannels.open({
      uri, count: 3, session, regions: src.regions.map((r) => ({ hva: r.hva, sizeBytes: r.sizeBytes })),
      tls: withTls ? { creds: clientCreds, hostname: '127.0.0.1' } : undefined,
    }, async () => { main.send(multifdRecord(3, session)); });
    try {
      const pages = MEM / 4096;
      for (let first = 0; first < pages; first += 64) await channels.send(0, Array.from({ length: Math.min(64, pages - first) }, (_, i) => first + i));
      await channels.sync(1);
      main.send(u32Record(RecordType.PASS_END, 1));
      main.send(stateRecord('vm', {}));
      main.end();
      const { ramBytesReadDirect } = await received;
      expect(channels.dataPages + channels.zeroPages).toBe(pages);
      expect(channels.dataPages).toBe(Array.from({ length: pages }, (_, p) => p).filter(isData).length);
      expect(Buffer.from(dst.regions[0]!.bytes).equals(Buffer.from(src.regions[0]!.bytes))).toBe(true);
      // TLS connections have no descriptor of their own to read from: their pages are copied.
      if (withTls) expect(ramBytesReadDirect).toBe(0);
      else expect(ramBytesReadDirect).toBeGreaterThan((channels.dataPages * 4096) / 2);
    } finally {
      channels.close();
      mainSocket.destroy();
    }
  });
  it('PrecopySender: a pass\'s bandwidth counts what the channels sent after their batches were queued, so a guest dirtying two pages a pass switches over unthrottled', async () => {
    const src = memory();
    const dst = memory();
    src.fill(gpa(MiB), 64 * 4096, 0x5a); // pass 1 has data to send
    src.fill(gpa(0), 2 * 4096, 0xa5); // and so do the pages every sync finds dirty
    const { uri, listener, received } = await incoming(dst);
    const socket = await connectTo(listener.port);
    // Every sync finds pages 0 and 1 dirty: passes of one small batch, which a channel thread is
    // still sending when sendBatch returns. Measured there alone, such a pass carried ~0 B/s, so no
    // pass ever fitted the downtime limit and auto-converge throttled the guest pass after pass.
    const { source, syncs, throttles } = fixedDirtySource(src, 0b11);
    const params = senderParams(2);
    const sender = new PrecopySender(source, socket, () => params, () => true, () => {}, {
      multifd: {
        channels: 2,
        open: (session, announce) => MultifdChannels.open({ uri, session, count: 2, regions: src.regions.map((r) => ({ hva: r.hva, sizeBytes: r.sizeBytes })) }, announce),
      },
    });
    await sender.run();
    await received;
    const info = sender.info();
    expect(info.status).toBe('completed');
    expect(throttles.filter((p) => p > 0), `passes: ${info.ram['dirty-sync-count']}`).toEqual([]);
    expect(info.ram.mbps).toBeGreaterThan(0);
    expect(info.ram['multifd-bytes']).toBeGreaterThan(64 * 4096); // pass 1's data went over the channels
    // Pass 1, the first fit, one settling pass, one more while the destination says it applied the
    // passes before (APPLIED): the switch-over's own sync is the fourth.
    expect(syncs()).toBe(4);
    expect(dst.read(gpa(MiB), 64 * 4096).every((b) => b === 0x5a)).toBe(true);
    expect(dst.read(gpa(0), 2 * 4096).every((b) => b === 0xa5)).toBe(true);
  });
});
