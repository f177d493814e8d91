import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { addon } from '../../../src/kvm/addon.js';
import {
  bulkReads, connectForMigration, connectionErrorText, giveWay, listenForMigration, readAvailable, readChunks, spinUntilReadable, watchForDeadPeer,
} from '../../../src/migration/transport.js';
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

  it('bulkReads with a placement: each read lands where it says, the bulk reads no longer than asked, and every byte once, in order', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 3);
    const SEGMENT = 100 * 1024; // even segments are read into the connection's buffer, odd ones straight into `landedInto`
    const viaSink = Buffer.alloc(data.length);
    const landedInto = Buffer.alloc(data.length);
    let at = 0;
    let landedReads = 0;
    const segmentLeft = () => SEGMENT - (at % SEGMENT);
    const direct = () => Math.floor(at / SEGMENT) % 2 === 1;
    const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
    try {
      const sender = await connectForMigration(`tcp:127.0.0.1:${listener.port}`);
      const socket = bulkReads(await listener.connection);
      const ended = new Promise((r) => socket.once('end', r));
      // The read under way when readChunks is called had its buffer chosen before: a prelude takes it.
      let prelude = 0;
      const preluded = new Promise<void>((resolve) => {
        readChunks(socket, (chunk) => {
          if (prelude < 5) {
            prelude += chunk.length;
            if (prelude === 5) resolve();
            return;
          }
          expect(direct()).toBe(false);
        expect(chunk.length).toBeLessThanOrEqual(segmentLeft()); // never past what next() allowed
          chunk.copy(viaSink, at);
          at += chunk.length;
        }, {
          next: () => {
            if (prelude < 5) return { maxBytes: 5 - prelude };
            if (at === data.length) return { maxBytes: 1024 }; // only the end is left to read
            return direct() ? { view: landedInto.subarray(at, at + segmentLeft()) } : { maxBytes: segmentLeft() };
          },
          landed: (bytes) => {
            expect(direct()).toBe(true);
            expect(bytes.byteOffset).toBe(landedInto.byteOffset + at);
            at += bytes.length;
            landedReads++;
          },
        });
      });
      sender.write('hello');
      await preluded;
      sender.end(data);
      await ended;
      socket.destroy();
    } finally {
      listener.close();
    }
    expect(at).toBe(data.length);
    for (let s = 0; s < data.length; s += SEGMENT) {
      const from = Math.floor(s / SEGMENT) % 2 === 1 ? landedInto : viaSink;
      expect(from.subarray(s, s + SEGMENT).equals(data.subarray(s, s + SEGMENT)), `segment at ${s}`).toBe(true);
    }
    expect(landedReads).toBeGreaterThanOrEqual(Math.floor(data.length / SEGMENT / 2));
  });

  it('bulkReads with committed bytes: the reader is woken once they have all come (SO_RCVLOWAT), not at each piece, and the bytes after them still come', async () => {
    const HEAD = 9;
    const PIECE = 64 * 1024;
    const PIECES = 8;
    const body = randomBytes(PIECE * PIECES);
    const tail = Buffer.from('end');
    const reads: number[] = [];
    let at = 0;
    const { sender, accepted, close } = await pausedConnection();
    const socket = bulkReads(accepted);
    try {
      const got: Buffer[] = [];
      const reached = new Map<number, () => void>();
      const until = (bytes: number) => new Promise<void>((resolve) => reached.set(bytes, resolve));
      const headRead = until(HEAD);
      const bodyRead = until(HEAD + body.length);
      const all = until(HEAD + body.length + tail.length);
      readChunks(socket, (chunk) => {
        reads.push(chunk.length);
        got.push(Buffer.from(chunk));
        at += chunk.length;
        reached.get(at)?.();
      }, {
        next: () => ({ maxBytes: Infinity }),
        landed: () => { throw new Error('nothing was placed in a view'); },
        // The body is announced by the head, as a RAM record's data is by its entries.
        committed: () => (at >= HEAD && at < HEAD + body.length ? HEAD + body.length - at : 0),
      });
      // Each step waits for the reader, so that the reads do not depend on how fast it is.
      sender.write(randomBytes(HEAD));
      await headRead;
      // Each piece alone, 20 ms apart: without the threshold, a read per piece.
      for (let p = 0; p < PIECES; p++) {
        sender.write(body.subarray(p * PIECE, (p + 1) * PIECE));
        await new Promise((r) => setTimeout(r, 20));
      }
      await bodyRead;
      sender.write(tail);
      await all;
      expect(Buffer.concat(got).subarray(HEAD).equals(Buffer.concat([body, tail]))).toBe(true);
    } finally {
      socket.destroy();
      close();
    }
    expect(reads).toEqual([HEAD, body.length, tail.length]);
  });

  it('bulkReads with committed bytes: a sink that waits awake for what follows them sees it come (the threshold is back to 1 byte)', async () => {
    const HEAD = 9;
    const BODY = 256 * 1024;
    const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
    // Another process sends, so that bytes come while the sink below holds this one's event loop.
    const child = spawn(process.execPath, ['-e', `
      const s = require('node:net').connect(${listener.port}, '127.0.0.1', () => {
        s.write(Buffer.alloc(${HEAD}));
        setTimeout(() => s.write(Buffer.alloc(${BODY})), 100);
        setTimeout(() => s.write('tail'), 300); // and the connection stays open: its end would wake any reader
        setTimeout(() => s.end(), 60_000);
      });
    `], { stdio: 'ignore' });
    let at = 0;
    try {
      const socket = bulkReads(await listener.connection);
      const sawTail = await new Promise<boolean>((resolve) => {
        readChunks(socket, (chunk) => {
          at += chunk.length;
          // The body's last byte read: wait awake for the tail, as the destination does after SWITCHOVER.
          if (at === HEAD + BODY) resolve(spinUntilReadable([socket], 5_000));
        }, {
          next: () => ({ maxBytes: Infinity }),
          landed: () => { throw new Error('nothing was placed in a view'); },
          committed: () => (at >= HEAD && at < HEAD + BODY ? HEAD + BODY - at : 0),
        });
      });
      socket.destroy();
      expect(sawTail).toBe(true);
    } finally {
      child.kill();
      listener.close();
    }
  });

  it('a placement that throws is dropped (Node calls it outside our code): every later byte reaches the sink, in order', async () => {
    const data = randomBytes(2 * 1024 * 1024);
    const parts: Buffer[] = [];
    let asked = 0;
    const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
    try {
      const sender = await connectForMigration(`tcp:127.0.0.1:${listener.port}`);
      const socket = bulkReads(await listener.connection);
      const ended = new Promise((r) => socket.once('end', r));
      readChunks(socket, (chunk) => parts.push(Buffer.from(chunk)), {
        next: () => {
          if (++asked === 3) throw new Error('a bug in the placement');
          return { maxBytes: 1000 };
        },
        landed: () => { throw new Error('nothing was placed in a view'); },
      });
      sender.end(data);
      await ended;
      socket.destroy();
    } finally {
      listener.close();
    }
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    expect(asked).toBe(3); // never asked again
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

  /**
   * A loopback connection whose accepted end is handed out paused (nothing is read from it), and
   * `send`, which resolves once a byte from the other end has gone out; `close` ends it all.
   */
  const pausedConnection = async () => {
    const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
    const sender = await connectForMigration(`tcp:127.0.0.1:${listener.port}`).catch((e: unknown) => { listener.close(); throw e; });
    const accepted = await listener.connection;
    return {
      sender, accepted,
      send: () => new Promise<void>((resolve, reject) => sender.write('x', (e) => (e ? reject(e) : resolve()))),
      close: () => { sender.destroy(); accepted.destroy(); listener.close(); },
    };
  };

  describe('spinUntilReadable', () => {
    it('returns true at once for bytes not yet read, and false once maxMs has passed with nothing to read', async () => {
      const { sender, accepted, send, close } = await pausedConnection();
      try {
        const t0 = performance.now();
        expect(spinUntilReadable([accepted], 30)).toBe(false);
        expect(performance.now() - t0).toBeGreaterThanOrEqual(30);
        await send();
        expect(spinUntilReadable([accepted], 60_000)).toBe(true);
        // Either of several sockets will do.
        expect(spinUntilReadable([sender, accepted], 60_000)).toBe(true);
      } finally {
        close();
      }
    });

    it('with maxMs 0 polls once and never yields the CPU', async () => {
      // The caller of a check in passing decides itself when to give way (rehearseTail): when the check
      // yielded on its own, it cost 0.6 ms of an idle switch-over on kvm_pvm.
      const { accepted, send, close } = await pausedConnection();
      const yields = vi.spyOn(addon(), 'schedYield');
      try {
        expect(spinUntilReadable([accepted], 0)).toBe(false);
        await send();
        expect(spinUntilReadable([accepted], 60_000)).toBe(true);
        expect(spinUntilReadable([accepted], 0)).toBe(true);
        expect(yields).not.toHaveBeenCalled();
      } finally {
        yields.mockRestore();
        close();
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

    it('giveWay yields the CPU, without sleeping, once and until ms have passed', () => {
      const yields = vi.spyOn(addon(), 'schedYield');
      try {
        const t0 = performance.now();
        giveWay(5);
        expect(performance.now() - t0).toBeGreaterThanOrEqual(5);
        expect(yields).toHaveBeenCalled();
        yields.mockClear();
        giveWay(0);
        expect(yields).toHaveBeenCalledTimes(1);
      } finally {
        yields.mockRestore();
      }
    });

    it('watches no socket without a file descriptor of its own, and then returns false at once', () => {
      const t0 = performance.now();
      expect(spinUntilReadable([new net.Socket()], 60_000)).toBe(false);
      expect(performance.now() - t0).toBeLessThan(60_000);
    });
  });

  describe('readAvailable', () => {
    it("takes what has come at once, outside the event loop, and Node's own reads go on after it, in order", async () => {
      const { sender, accepted, close } = await pausedConnection();
      try {
        const seen: Buffer[] = [];
        sender.on('data', (d: Buffer) => seen.push(d)); // flowing, as a migration source's connection
        const into = Buffer.alloc(64);
        expect(readAvailable(sender, into)).toBe(0); // nothing yet
        accepted.write('LOADED');
        expect(spinUntilReadable([sender], 60_000)).toBe(true);
        const n = readAvailable(sender, into)!;
        expect(into.subarray(0, n).toString()).toBe('LOADED');
        accepted.end('COMMIT');
        await new Promise((resolve) => sender.once('end', resolve));
        expect(Buffer.concat(seen).toString()).toBe('COMMIT');
        expect(readAvailable(sender, into)).toBe(0); // the end of the stream
      } finally {
        close();
      }
    });

    it('reads nothing from a socket without a file descriptor of its own (TLS)', () => {
      expect(readAvailable(new net.Socket(), Buffer.alloc(8))).toBeUndefined();
    });
  });

  describe('a peer taken for dead (x-peer-timeout)', () => {
    it('a timed-out connection\'s error names the peer and the parameter (not with the timeout off); a reset says the peer closed it; others stay as they are', () => {
      const timedOut = Object.assign(new Error('read ETIMEDOUT'), { code: 'ETIMEDOUT' });
      expect(connectionErrorText(timedOut, 'destination', 2000)).toBe('the destination acknowledged nothing for 2000 ms (x-peer-timeout), so it is taken for dead (read ETIMEDOUT)');
      expect(connectionErrorText(timedOut, 'source', 0)).toBe('read ETIMEDOUT');
      // A host gone from the link: its neighbour entry fails, and the timeout reports the ICMP error it met.
      const unreachable = Object.assign(new Error('read EHOSTUNREACH'), { code: 'EHOSTUNREACH' });
      expect(connectionErrorText(unreachable, 'source', 30000)).toBe('the source acknowledged nothing for 30000 ms (x-peer-timeout), so it is taken for dead (read EHOSTUNREACH)');
      expect(connectionErrorText(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'source', 2000)).toBe('the source closed the connection (read ECONNRESET)');
      expect(connectionErrorText(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }), 'destination', 0)).toBe('the destination closed the connection (write EPIPE)');
      expect(connectionErrorText(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'destination', 2000)).toBe('connect ECONNREFUSED');
    });

    it('sets its options on a connected socket, with 0 touching nothing, and refuses one without a descriptor (it would watch nothing)', async () => {
      const server = net.createServer((s) => s.on('error', () => {}));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const socket = await connectForMigration(`tcp:127.0.0.1:${(server.address() as net.AddressInfo).port}`);
        expect(() => watchForDeadPeer(socket, 2000)).not.toThrow();
        expect(() => watchForDeadPeer(socket, 0)).not.toThrow();
        socket.destroy();
      } finally {
        server.close();
      }
      expect(() => watchForDeadPeer(new net.Socket(), 2000)).toThrow(/no socket descriptor of its own/);
      expect(() => watchForDeadPeer(new net.Socket(), 0)).not.toThrow();
    });
  });
});
