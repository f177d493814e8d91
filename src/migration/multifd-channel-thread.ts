/**
 * One multifd channel of an outgoing migration, in its own worker thread: it maps guest RAM itself
 * (views of the same mappings, read only by intent), connects its own TCP (or TLS) connection, and turns page
 * lists from the main thread into RAM records, so that zero-page checks, copies, checksums and socket
 * writes of several channels run on several cores.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { addon } from '../kvm/addon.js';
import { channelRecord, syncRecord } from './multifd.js';
import { RecordBufferPool, encodeRamRecord } from './ram-record.js';
import type { PageRange } from '../memory/dirty-bitmap.js';
import { StreamChecksum } from './stream-checksum.js';
import { secureClient, type TlsCredsX509 } from './tls.js';
import { connectForMigration, connectionErrorText } from './transport.js';

export interface ChannelThreadData {
  readonly uri: string;
  readonly index: number;
  readonly session: Uint8Array;
  /** Guest RAM, as GuestMemory's regions map it in this process (hva); a channel reads it while
   *  encoding a batch, and the main thread keeps it mapped until every channel has ended. */
  readonly regions: readonly { readonly hva: bigint; readonly sizeBytes: number }[];
  readonly tls?: { readonly creds: TlsCredsX509; readonly hostname: string };
  /** x-peer-timeout (transport.ts, watchForDeadPeer); 0: none. */
  readonly peerTimeoutMs: number;
}

/** Main thread -> channel. Messages are handled in order, so a sync follows every batch before it. */
export type ToChannel =
  | { type: 'connect' }
  | { type: 'batch'; region: number; pages: Uint32Array; zeroRuns: readonly PageRange[] }
  | { type: 'sync'; pass: number }
  | { type: 'end' };

/** Channel -> main thread. 'sent' returns one batch's credit once its record is in the socket. */
export type FromChannel =
  | { type: 'ready' }
  | { type: 'connected' }
  | { type: 'sent'; bytes: number; zero: number; data: number }
  | { type: 'synced'; pass: number }
  | { type: 'error'; message: string };

async function main(data: ChannelThreadData): Promise<void> {
  const port = parentPort!;
  const post = (m: FromChannel) => port.postMessage(m);
  const native = addon();
  const regions = data.regions.map((r) => new Uint8Array(native.mappingView(r.hva, r.sizeBytes)));
  // Ready (modules loaded, RAM mapped) before connecting: a thread's start can take seconds on a slow
  // host, and the destination gives the channels a limited time once it has seen MULTIFD.
  post({ type: 'ready' });
  await new Promise<void>((resolve) => port.once('message', (m: ToChannel) => { if (m.type === 'connect') resolve(); }));
  const tcp = await connectForMigration(data.uri, data.peerTimeoutMs);
  const socket = data.tls === undefined ? tcp : await secureClient(tcp, reviveCreds(data.tls.creds), data.tls.hostname);
  socket.on('error', (e) => post({ type: 'error', message: `multifd channel ${data.index}: ${connectionErrorText(e, 'destination', data.peerTimeoutMs)}` }));
  socket.on('close', () => post({ type: 'error', message: `multifd channel ${data.index}: the destination closed the connection` }));
  const checksum = new StreamChecksum();
  const write = (buf: Buffer, written?: () => void): Promise<void> => {
    checksum.update(buf);
    return socket.write(buf, written) ? Promise.resolve() : new Promise((resolve) => socket.once('drain', resolve));
  };
  const recordBuffers = new RecordBufferPool();
  await write(channelRecord(data.session, data.index));
  post({ type: 'connected' });
  port.on('message', (m: ToChannel) => {
    switch (m.type) {
      case 'batch': {
        const counts = { zero: 0, data: 0 };
        const into = recordBuffers.take();
        const rec = encodeRamRecord(m.region, regions[m.region]!, m.pages, counts, m.zeroRuns, into);
        void write(rec, () => recordBuffers.give(into)).then(() => post({ type: 'sent', bytes: rec.length, ...counts }));
        return;
      }
      case 'sync':
        void write(syncRecord(m.pass, checksum.bytes, checksum.value)).then(() => post({ type: 'synced', pass: m.pass }));
        return;
      case 'end':
        socket.removeAllListeners('close');
        socket.end(() => port.close());
    }
  });
}

/** Structured cloning turns Buffers into plain Uint8Arrays; tls wants Buffers. */
function reviveCreds(c: TlsCredsX509): TlsCredsX509 {
  const buf = (u: Uint8Array | undefined) => (u === undefined ? undefined : Buffer.from(u.buffer, u.byteOffset, u.length));
  return { ...c, ca: buf(c.ca)!, cert: buf(c.cert), key: buf(c.key) };
}

main(workerData as ChannelThreadData).catch((e: unknown) => {
  parentPort!.postMessage({ type: 'error', message: `multifd channel ${(workerData as ChannelThreadData).index}: ${e instanceof Error ? e.message : String(e)}` } satisfies FromChannel);
});
