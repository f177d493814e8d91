import net from 'node:net';

/** A migration URI that cannot be used; the message says which and why. */
export class MigrationTransportError extends Error {
  override name = 'MigrationTransportError';
}

export interface TcpAddress {
  readonly host: string;
  readonly port: number;
}

/** Parses QEMU-style `tcp:HOST:PORT` (`tcp:[::1]:4444` for IPv6). */
export function parseTcpUri(uri: string): TcpAddress {
  const m = /^tcp:(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(uri);
  if (m === null) throw new MigrationTransportError(`migration URI '${uri}' is not tcp:HOST:PORT`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new MigrationTransportError(`migration URI '${uri}': port ${port} is out of range`);
  return { host: m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2]!), port };
}

export interface IncomingListener {
  /** The first connection: the migration's main connection. */
  readonly connection: Promise<net.Socket>;
  readonly port: number;
  /** The next `count` connections (multifd channels), in the order they arrived. */
  next(count: number, timeoutMs: number): Promise<net.Socket[]>;
  /** Stops listening and drops connections nobody took. */
  close(): void;
}

/** Listens at `uri` for one migration (a main connection, then its channels). Fails clearly if the address is taken. */
export async function listenForMigration(uri: string): Promise<IncomingListener> {
  const { host, port } = parseTcpUri(uri);
  const server = net.createServer();
  let resolveConnection!: (s: net.Socket) => void;
  const connection = new Promise<net.Socket>((resolve) => { resolveConnection = resolve; });
  let first = true;
  let closed = false;
  const queued: net.Socket[] = [];
  let wake: (() => void) | undefined;
  server.on('connection', (socket) => {
    socket.setNoDelay(true);
    if (first) {
      first = false;
      resolveConnection(socket);
      return;
    }
    if (closed) {
      socket.destroy();
      return;
    }
    // Later connections wait here until the receiver asks for channels (or the listener closes).
    queued.push(socket);
    wake?.();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') reject(new MigrationTransportError(`cannot listen on ${uri}: the port is in use; choose another port`));
      else if (e.code === 'EADDRNOTAVAIL') reject(new MigrationTransportError(`cannot listen on ${uri}: no local interface has that address`));
      else reject(new MigrationTransportError(`cannot listen on ${uri}: ${e.message}`));
    });
    server.listen(port, host, () => resolve());
  });
  return {
    connection,
    port: (server.address() as net.AddressInfo).port,
    async next(count, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (queued.length < count) {
        if (closed) throw new MigrationTransportError('the incoming listener was closed');
        const left = deadline - Date.now();
        if (left <= 0) throw new MigrationTransportError(`${queued.length} of ${count} connections arrived within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => { clearTimeout(timer); resolve(); };
        });
      }
      return queued.splice(0, count);
    },
    close() {
      closed = true;
      queued.splice(0).forEach((s) => s.destroy());
      server.close();
      wake?.();
    },
  };
}

/** Connects to a destination's incoming port. */
export async function connectForMigration(uri: string, timeoutMs = 10_000): Promise<net.Socket> {
  const { host, port } = parseTcpUri(uri);
  return await new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => { socket.destroy(); reject(new MigrationTransportError(`no answer from ${uri} within ${timeoutMs} ms`)); }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ECONNREFUSED') reject(new MigrationTransportError(`nothing listens at ${uri}: start the destination with --incoming ${uri}`));
      else reject(new MigrationTransportError(`cannot connect to ${uri}: ${e.message}`));
    });
  });
}
