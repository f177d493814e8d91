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
  /** The first connection; later ones are turned away (one stream per incoming VM). */
  readonly connection: Promise<net.Socket>;
  readonly port: number;
  close(): void;
}

/** Listens at `uri` for one migration stream. Fails clearly if the address is taken. */
export async function listenForMigration(uri: string): Promise<IncomingListener> {
  const { host, port } = parseTcpUri(uri);
  const server = net.createServer();
  let accepted = false;
  let resolveConnection!: (s: net.Socket) => void;
  const connection = new Promise<net.Socket>((resolve) => { resolveConnection = resolve; });
  server.on('connection', (socket) => {
    if (accepted) {
      socket.destroy(); // an incoming VM accepts exactly one stream
      return;
    }
    accepted = true;
    socket.setNoDelay(true);
    resolveConnection(socket);
    server.close();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') reject(new MigrationTransportError(`cannot listen on ${uri}: the port is in use; choose another port`));
      else if (e.code === 'EADDRNOTAVAIL') reject(new MigrationTransportError(`cannot listen on ${uri}: no local interface has that address`));
      else reject(new MigrationTransportError(`cannot listen on ${uri}: ${e.message}`));
    });
    server.listen(port, host, () => resolve());
  });
  return { connection, port: (server.address() as net.AddressInfo).port, close: () => server.close() };
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
