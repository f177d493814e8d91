/**
 * Socket addresses as tsvmm's command line writes them, in QEMU's spelling: `unix:PATH` for a unix
 * socket, `tcp:HOST:PORT` for TCP (an IPv6 HOST in brackets, `tcp:[::1]:4444`). The QMP server, the
 * QMP client and `tsvmm migrate` all parse through here, so they agree on what is valid.
 */

export type SocketAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

/** A socket address that does not parse; the message quotes the input and shows the right form. */
export class AddressError extends Error {
  override name = 'AddressError';
}

/**
 * Linux's sun_path is 108 bytes including the terminating NUL; a longer path fails at bind/connect
 * with an obscure EINVAL, so it is refused here with a message that says why.
 */
const UNIX_PATH_MAX_BYTES = 107;

/** Parses `unix:PATH` or `tcp:HOST:PORT`. A TCP port of 0 (any free port) is allowed only when `listening`. */
export function parseSocketAddress(text: string, { listening = false }: { listening?: boolean } = {}): SocketAddress {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    if (path === '') throw new AddressError(`'${text}' has no path: use unix:PATH (e.g. unix:/tmp/tsvmm.qmp)`);
    if (Buffer.byteLength(path) > UNIX_PATH_MAX_BYTES) {
      throw new AddressError(`'${text}': a unix socket path is at most ${UNIX_PATH_MAX_BYTES} bytes; use a shorter path`);
    }
    return { kind: 'unix', path };
  }
  if (text.startsWith('tcp:')) {
    const rest = text.slice('tcp:'.length);
    // An IPv6 literal carries colons of its own, so it comes in brackets, as in URLs and in QEMU.
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
    if (m === null) throw new AddressError(`'${text}' is not tcp:HOST:PORT (e.g. tcp:127.0.0.1:4444, tcp:[::1]:4444)`);
    const host = m[1] ?? m[2]!;
    const port = Number(m[3]);
    if (port > 65535 || (port === 0 && !listening)) throw new AddressError(`'${text}': port ${m[3]} is not between 1 and 65535`);
    return { kind: 'tcp', host, port };
  }
  throw new AddressError(`'${text}' is neither unix:PATH nor tcp:HOST:PORT`);
}

/** The address in the form parseSocketAddress reads, for messages. */
export function formatSocketAddress(a: SocketAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `tcp:[${a.host}]:${a.port}` : `tcp:${a.host}:${a.port}`;
}

/** Accepts either form, so callers can pass a command-line string or an already parsed address. */
export function toSocketAddress(address: string | SocketAddress, options?: { listening?: boolean }): SocketAddress {
  return typeof address === 'string' ? parseSocketAddress(address, options) : address;
}
