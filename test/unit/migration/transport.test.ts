import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { bulkReads, connectForMigration, listenForMigration, readChunks, spinUntilReadable } from '../../../src/migration/transport.js';
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

  describe('spinUntilReadable', () => {
    it('returns true at once for bytes not yet read, and false once maxMs has passed with nothing to read', async () => {
      const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
      try {
        const sender = await connectForMigration(`tcp:127.0.0.1:${listener.port}`);
        const accepted = await listener.connection; // handed out paused: nothing is read from it
        const t0 = performance.now();
        expect(spinUntilReadable([accepted], 30)).toBe(false);
        expect(performance.now() - t0).toBeGreaterThanOrEqual(30);
        await new Promise<void>((resolve, reject) => sender.write('x', (e) => (e ? reject(e) : resolve())));
        expect(spinUntilReadable([accepted], 60_000)).toBe(true);
        // Either of several sockets will do.
        expect(spinUntilReadable([sender, accepted], 60_000)).toBe(true);
        sender.destroy();
        accepted.destroy();
      } finally {
        listener.close();
      }
    });

    it('sees bytes that arrive while it spins (the event loop blocked), from another process', async () => {
      const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
      const child = spawn(process.execPath, ['-e', `
        const s = require('node:net').connect(${listener.port}, '127.0.0.1', () => setTimeout(() => s.end('tail'), 200));
      `], { stdio: 'ignore' });
      try {
        const accepted = await listener.connection;
        const t0 = performance.now();
        expect(spinUntilReadable([accepted], 60_000)).toBe(true);
        expect(performance.now() - t0).toBeLessThan(60_000);
        accepted.destroy();
      } finally {
        child.kill();
        listener.close();
      }
    });

    it('watches no socket without a file descriptor of its own, and then returns false at once', () => {
      const t0 = performance.now();
      expect(spinUntilReadable([new net.Socket()], 60_000)).toBe(false);
      expect(performance.now() - t0).toBeLessThan(60_000);
    });
  });
});
