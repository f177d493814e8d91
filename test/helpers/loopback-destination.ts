// A real incoming migration (receiveMigration) into guest memory, listening on loopback: the far end
// for unit tests of the sender and the stream, without KVM.
import net from 'node:net';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { receiveMigration, type MigrationDestination, type ReceivedMigration } from '../../src/migration/incoming.js';
import { bulkReads, listenForMigration, type IncomingListener } from '../../src/migration/transport.js';
import type { Disposables } from './disposables.js';
import { shapeOf } from './fixed-dirty-source.js';
import { freePort } from './free-port.js';

/** `mem` as a destination VM of shapeOf(mem) whose state pieces are dropped. */
export function destinationOf(mem: GuestMemory): MigrationDestination {
  const shape = shapeOf(mem);
  return { memory: mem, shape: () => shape, restoreState: () => {} };
}

/**
 * Listens on a free loopback port and receives one migration into `dst` (multifd channels too), each
 * connection passed through `secure` (plain TCP read in bulk by default). The listener closes after the test.
 */
export async function loopbackDestination(
  dst: GuestMemory, cleanup: Disposables, secure: (s: net.Socket) => Promise<net.Socket> = async (s) => bulkReads(s),
): Promise<{ listener: IncomingListener; uri: string; received: Promise<ReceivedMigration> }> {
  const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
  cleanup.add({ dispose: () => listener.close() });
  const received = listener.connection.then(async (main) => receiveMigration(destinationOf(dst), await secure(main), async (n, t) => Promise.all((await listener.next(n, t)).map(secure))));
  received.catch(() => {});
  return { listener, uri: `tcp:127.0.0.1:${listener.port}`, received };
}

/** A plain TCP connection to a loopback port, once connected: the source's end of a test migration. */
export function connectTo(port: number): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}
