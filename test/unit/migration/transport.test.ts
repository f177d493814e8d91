import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { bulkReads, connectForMigration, listenForMigration, readChunks } from '../../../src/migration/transport.js';
import { freePort } from '../../helpers/free-port.js';

/** Sends `data` over a real loopback connection in `piece`-byte writes; resolves with what the destination's reader saw. */
async function transfer(data: Buffer, piece: number, bulk: boolean): Promise<{ got: Buffer; transient: number }> {
  const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
  try {
    const sender = await connectForMigration(`tcp:127.0.0.1:${listener.port}`);
    // The sender starts at once: whatever arrives before the reader is attached must not be lost.
    for (let at = 0; at < data.length; at += piece) sender.write(data.subarray(at, at + piece));
    sender.end();
    const accepted = await listener.connection;
    await new Promise((r) => setTimeout(r, 50));
    const socket = bulk ? bulkReads(accepted) : accepted;
    const parts: Buffer[] = [];
    let transient = 0;
    readChunks(socket, (chunk, isTransient) => {
      if (isTransient) transient++;
      parts.push(Buffer.from(chunk)); // copy: a transient chunk is reused after this call
    });
    await new Promise((r) => socket.once('end', r));
    socket.destroy();
    return { got: Buffer.concat(parts), transient };
  } finally {
    listener.close();
  }
}

describe('migration transport', () => {
  it('bulkReads: every byte arrives in order, read into the reused buffer, including those sent before the reader was attached', async () => {
    const data = randomBytes(9 * 1024 * 1024 + 17);
    const { got, transient } = await transfer(data, 1 << 20, true);
    expect(got.equals(data)).toBe(true);
    expect(transient).toBeGreaterThan(0);
  });

  it('readChunks on an ordinary (paused) accepted socket reads it as a stream', async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const { got, transient } = await transfer(data, 4096, false);
    expect(got.equals(data)).toBe(true);
    expect(transient).toBe(0);
  });

  it('bulkReads leaves the connection open for writing back (the destination answers LOADED or REFUSED on it)', async () => {
    const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
    try {
      const sender = await connectForMigration(`tcp:127.0.0.1:${listener.port}`);
      const socket = bulkReads(await listener.connection);
      readChunks(socket, () => {});
      const answer = new Promise<string>((resolve) => sender.once('data', (d: Buffer) => resolve(d.toString())));
      socket.write('LOADED');
      expect(await answer).toBe('LOADED');
      sender.destroy();
      socket.destroy();
    } finally {
      listener.close();
    }
  });
});
