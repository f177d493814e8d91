// The source's main-connection writer over real loopback TCP: what reaches the peer, in what order,
// in how many writes, and what END says of it.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RecordType, parseEnd, record } from '../../../src/migration/protocol.js';
import { StreamWriter } from '../../../src/migration/stream-writer.js';
import { xxh3Of } from '../../../src/migration/stream-checksum.js';

const sockets: net.Socket[] = [];
const servers: net.Server[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});

/** A connected pair: the writer's socket (its write() calls counted) and everything the peer reads. */
async function pair(): Promise<{ socket: net.Socket; writes: Buffer[]; received: () => Buffer; until: (bytes: number) => Promise<void> }> {
  const server = net.createServer();
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const peer = await accepted;
  sockets.push(socket, peer);
  const chunks: Buffer[] = [];
  let wake = () => {};
  peer.on('data', (d: Buffer) => { chunks.push(d); wake(); });
  const writes: Buffer[] = [];
  const write = socket.write.bind(socket) as (buf: Buffer, cb?: () => void) => boolean;
  (socket as unknown as { write: typeof write }).write = (buf, cb) => { writes.push(buf); return write(buf, cb); };
  const received = () => Buffer.concat(chunks);
  const until = async (bytes: number) => {
    while (received().length < bytes) await new Promise<void>((resolve) => { wake = resolve; });
  };
  return { socket, writes, received, until };
}

const writerOn = (socket: net.Socket, check: () => void = () => {}) =>
  new StreamWriter(socket, { check, wait: () => new Promise<void>((resolve) => socket.once('drain', resolve)) });

describe('StreamWriter', () => {
  it('sends in order, and END counts and hashes exactly the bytes before it', async () => {
    const p = await pair();
    const w = writerOn(p.socket);
    const records = [record(RecordType.PASS_END, Buffer.from([1, 0, 0, 0])), record(RecordType.RAM, randomBytes(3 * 1024 * 1024)), record(RecordType.VERIFY, Buffer.from('x'))];
    for (const r of records) await w.send(r);
    const before = Buffer.concat(records);
    expect(w.bytesSent).toBe(before.length);
    await w.send(w.endRecord());
    await p.until(before.length + 5 + 16);
    const got = p.received();
    expect(got.subarray(0, before.length).equals(before)).toBe(true);
    expect(parseEnd(got.subarray(before.length + 5))).toEqual({ bytesBefore: before.length, hash: xxh3Of(before) });
  });

  it('holds records until flushHeld, joins small ones into one write and writes a large one from its own buffer', async () => {
    const p = await pair();
    const w = writerOn(p.socket);
    w.startHolding();
    const small = [record(RecordType.STATE, randomBytes(100)), record(RecordType.STATE, randomBytes(200))];
    const large = record(RecordType.RAM, randomBytes(512 * 1024));
    let freed = 0;
    for (const r of small) await w.send(r, () => freed++);
    await w.send(large, () => freed++);
    w.holdWithEnd([record(RecordType.STATE, randomBytes(50))]);
    expect(p.writes).toEqual([]); // nothing written yet
    expect(w.heldBytes).toBe(small[0]!.length + small[1]!.length + large.length + 55 + 21);
    await w.flushHeld();
    expect(p.writes.length).toBe(3); // the two small records joined, the large one alone, the last record and END joined
    expect(p.writes[1]).toBe(large);
    w.stopHolding();
    const total = w.bytesSent;
    await p.until(total);
    await new Promise((resolve) => setImmediate(resolve));
    expect(freed).toBe(3); // joined records at once (the copy goes), the large one once the socket is done with it
    expect(parseEnd(p.received().subarray(total - 16)).bytesBefore).toBe(total - 21);
    expect(parseEnd(p.received().subarray(total - 16)).hash).toBe(xxh3Of(p.received().subarray(0, total - 21)));
  });

  it('in hold mode, writes once 4 MiB have gathered without waiting for flushHeld', async () => {
    const p = await pair();
    const w = writerOn(p.socket);
    w.startHolding();
    const r = record(RecordType.RAM, randomBytes(3 * 1024 * 1024));
    await w.send(r);
    expect(p.writes.length).toBe(0);
    await w.send(Buffer.from(r));
    expect(p.writes.length).toBe(2);
    expect(w.heldBytes).toBe(0);
  });

  it('stops at its check: a cancelled migration writes nothing more, and counts nothing more', async () => {
    const p = await pair();
    let cancelled = false;
    const w = writerOn(p.socket, () => { if (cancelled) throw new Error('cancelled by request'); });
    await w.send(record(RecordType.PASS_END, Buffer.from([1, 0, 0, 0])));
    cancelled = true;
    await expect(w.send(record(RecordType.PASS_END, Buffer.from([2, 0, 0, 0])))).rejects.toThrow('cancelled by request');
    expect(w.bytesSent).toBe(9);
    expect(p.writes.length).toBe(1);
  });
});
