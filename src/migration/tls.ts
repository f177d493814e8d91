import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';

/**
 * TLS for the migration stream, configured as QEMU configures it, so the same certificate directories
 * and commands work:
 *
 *   --object tls-creds-x509,id=tls0,dir=/etc/pki/qemu,endpoint=server[,verify-peer=on]   (destination)
 *   --object tls-creds-x509,id=tls0,dir=/etc/pki/qemu,endpoint=client                    (source)
 *   QMP migrate-set-parameters {"tls-creds": "tls0"[, "tls-hostname": "host"]} on both sides; the
 *   destination is started with --incoming defer and listens on migrate-incoming, as QEMU requires.
 *
 * The directory holds QEMU's file names (docs/system/tls.rst): ca-cert.pem, and server-cert.pem +
 * server-key.pem for a server, client-cert.pem + client-key.pem for a client. The source checks the
 * destination's certificate against the CA and against tls-hostname (or the host of the migration URI);
 * with verify-peer (QEMU's default: on) the destination requires and checks the source's certificate.
 */

export class TlsCredsError extends Error {
  override name = 'TlsCredsError';
}

export interface TlsCredsX509 {
  readonly id: string;
  readonly dir: string;
  readonly endpoint: 'server' | 'client';
  readonly verifyPeer: boolean;
  readonly ca: Buffer;
  /** Absent for a client without a certificate (allowed when the server does not verify peers). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** Parses and loads `tls-creds-x509,id=ID,dir=DIR,endpoint=server|client[,verify-peer=on|off]`. */
export function parseTlsCredsObject(spec: string): TlsCredsX509 {
  const [type, ...props] = spec.split(',');
  if (type !== 'tls-creds-x509') throw new TlsCredsError(`--object ${type}: only tls-creds-x509 objects are supported`);
  const kv = new Map<string, string>();
  for (const p of props) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new TlsCredsError(`--object ${spec}: '${p}' is not key=value`);
    kv.set(p.slice(0, eq), p.slice(eq + 1));
  }
  const known = new Set(['id', 'dir', 'endpoint', 'verify-peer']);
  for (const k of kv.keys()) if (!known.has(k)) throw new TlsCredsError(`--object tls-creds-x509: unknown property '${k}' (known: ${[...known].join(', ')})`);
  const id = kv.get('id');
  const dir = kv.get('dir');
  if (!id) throw new TlsCredsError('--object tls-creds-x509 needs id=NAME');
  if (!dir) throw new TlsCredsError(`--object tls-creds-x509,id=${id} needs dir=PATH (the directory with ca-cert.pem and the certificates)`);
  const endpoint = kv.get('endpoint') ?? 'client';
  if (endpoint !== 'server' && endpoint !== 'client') throw new TlsCredsError(`--object tls-creds-x509,id=${id}: endpoint must be server or client, not '${endpoint}'`);
  const vp = kv.get('verify-peer') ?? 'on';
  if (!['on', 'off', 'yes', 'no', 'true', 'false'].includes(vp)) throw new TlsCredsError(`--object tls-creds-x509,id=${id}: verify-peer must be on or off`);
  return loadTlsCreds(id, dir, endpoint, ['on', 'yes', 'true'].includes(vp));
}

function loadTlsCreds(id: string, dir: string, endpoint: 'server' | 'client', verifyPeer: boolean): TlsCredsX509 {
  const read = (file: string, needed: boolean): Buffer | undefined => {
    const p = path.join(dir, file);
    try {
      return readFileSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !needed) return undefined;
      throw new TlsCredsError(`tls-creds-x509 ${id}: cannot read ${p}: ${(e as Error).message}`);
    }
  };
  const ca = read('ca-cert.pem', true)!;
  // A server always presents a certificate; a client needs one only when the server verifies peers,
  // which it cannot know here: take it when present.
  const cert = read(`${endpoint}-cert.pem`, endpoint === 'server');
  const key = read(`${endpoint}-key.pem`, endpoint === 'server' || cert !== undefined);
  return { id, dir, endpoint, verifyPeer, ca, cert, key };
}

/** The source's side: TLS over a connected TCP socket; resolves once the destination is verified. */
export function secureClient(socket: net.Socket, creds: TlsCredsX509, hostname: string, timeoutMs = 10_000): Promise<tls.TLSSocket> {
  if (creds.endpoint !== 'client') return Promise.reject(new TlsCredsError(`tls-creds ${creds.id} is a server endpoint; the source needs endpoint=client`));
  const secure = tls.connect({
    socket, ca: creds.ca, cert: creds.cert, key: creds.key, host: hostname,
    // SNI carries names only; the identity check still uses `host`, IP or name.
    servername: net.isIP(hostname) === 0 ? hostname : undefined,
  });
  return handshake(secure, 'TLS handshake with the destination failed', timeoutMs);
}

/** The destination's side: TLS over an accepted socket; resolves once the handshake (and peer check) is done. */
export function secureServer(socket: net.Socket, creds: TlsCredsX509, timeoutMs = 10_000): Promise<tls.TLSSocket> {
  if (creds.endpoint !== 'server') return Promise.reject(new TlsCredsError(`tls-creds ${creds.id} is a client endpoint; the destination needs endpoint=server`));
  // A tls.Server fed the one accepted socket: the documented way to run the server side over a
  // connection accepted elsewhere, with Node's own peer-certificate enforcement.
  const server = tls.createServer({
    ca: creds.ca, cert: creds.cert, key: creds.key,
    requestCert: creds.verifyPeer, rejectUnauthorized: creds.verifyPeer,
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.destroy(); reject(new TlsCredsError(`TLS handshake with the source failed: no handshake within ${timeoutMs} ms`)); }, timeoutMs);
    server.once('tlsClientError', (e) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new TlsCredsError(`TLS handshake with the source failed: ${e.message}`));
    });
    server.once('secureConnection', (secure: tls.TLSSocket) => {
      clearTimeout(timer);
      secure.setNoDelay(true);
      resolve(secure);
    });
    server.emit('connection', socket);
  });
}

/** Resolves with `secure` once the client handshake (and the server's certificate check) is done. */
function handshake(secure: tls.TLSSocket, what: string, timeoutMs: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const fail = (reason: string) => {
      clearTimeout(timer);
      secure.destroy();
      reject(new TlsCredsError(`${what}: ${reason}`));
    };
    const timer = setTimeout(() => fail(`no handshake within ${timeoutMs} ms`), timeoutMs);
    secure.once('error', (e) => fail(e.message));
    secure.once('close', () => fail('the peer closed the connection'));
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      secure.removeAllListeners('error');
      secure.removeAllListeners('close');
      secure.setNoDelay(true);
      resolve(secure);
    });
  });
}
