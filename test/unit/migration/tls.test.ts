// TLS for migration streams with real certificates over real loopback TCP (no KVM needed).
import { rmSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { parseTlsCredsObject, secureClient, secureServer, type TlsCredsX509 } from '../../../src/migration/tls.js';
import { makeCa, makeCreds } from '../../helpers/tls-certs.js';

const ca = makeCa('tsvmm-test-ca');
const otherCa = makeCa('someone-else');
const serverDir = makeCreds(ca, 'server', ['127.0.0.1', 'localhost']);
const clientDir = makeCreds(ca, 'client', ['source.example']);
const load = (dir: string, endpoint: string, extra = '') => parseTlsCredsObject(`tls-creds-x509,id=t,dir=${dir},endpoint=${endpoint}${extra}`);

/** One TCP connection on loopback, each end upgraded with the given credentials. */
async function handshake(server: TlsCredsX509, client: TlsCredsX509, hostname = '127.0.0.1') {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const tcp = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((resolve) => tcp.once('connect', resolve));
  const results = await Promise.allSettled([secureServer(await accepted, server, 3000), secureClient(tcp, client, hostname, 3000)]);
  // With TLS 1.3 a client's handshake ends before the server has judged the client's certificate: a
  // refusal then arrives as an alert on an established socket (the migration sender handles 'error').
  for (const r of results) if (r.status === 'fulfilled') r.value.on('error', () => {});
  listener.close();
  return results;
}

describe('migration TLS (tls-creds-x509, as QEMU)', () => {
  it('a matching pair carries bytes both ways', async () => {
    const [s, c] = await handshake(load(serverDir, 'server'), load(clientDir, 'client'));
    expect(s.status).toBe('fulfilled');
    expect(c.status).toBe('fulfilled');
    const server = (s as PromiseFulfilledResult<import('node:tls').TLSSocket>).value;
    const client = (c as PromiseFulfilledResult<import('node:tls').TLSSocket>).value;
    const got = new Promise<string>((resolve) => server.once('data', (d) => resolve(d.toString())));
    client.write('pages');
    expect(await got).toBe('pages');
    client.destroy();
    server.destroy();
  });

  it('the source refuses a destination whose certificate its CA did not sign', async () => {
    const [s, c] = await handshake(load(serverDir, 'server'), load(makeCreds(ca, 'client', ['source.example'], otherCa), 'client'));
    expect(c.status).toBe('rejected');
    expect(String((c as PromiseRejectedResult).reason.message)).toMatch(/^TLS handshake with the destination failed: (self[- ]signed certificate in certificate chain|unable to verify|certificate signature failure)/);
    expect(s.status).toBe('rejected');
  });

  it('the source refuses a certificate for another host name (tls-hostname)', async () => {
    const [, c] = await handshake(load(serverDir, 'server'), load(clientDir, 'client'), 'migration.example');
    expect(c.status).toBe('rejected');
    expect(String((c as PromiseRejectedResult).reason.message)).toMatch(/TLS handshake with the destination failed: Hostname\/IP does not match certificate's altnames/);
  });

  it('with verify-peer on, the destination refuses a source without a certificate from its CA', async () => {
    const bare = makeCreds(ca, 'client', ['x']);
    rmSync(path.join(bare, 'client-cert.pem'));
    rmSync(path.join(bare, 'client-key.pem'));
    const [s] = await handshake(load(serverDir, 'server'), load(bare, 'client'));
    expect(s.status).toBe('rejected');
    expect(String((s as PromiseRejectedResult).reason.message)).toMatch(/^TLS handshake with the source failed: .*certificate/);
    const [s2, c2] = await handshake(load(serverDir, 'server', ',verify-peer=off'), load(bare, 'client'));
    expect(s2.status).toBe('fulfilled');
    expect(c2.status).toBe('fulfilled');
    (s2 as PromiseFulfilledResult<import('node:tls').TLSSocket>).value.destroy();
    (c2 as PromiseFulfilledResult<import('node:tls').TLSSocket>).value.destroy();
  });

  it('bad --object specs name the problem', () => {
    expect(() => parseTlsCredsObject('tls-creds-anon,id=a')).toThrow(/only tls-creds-x509 objects are supported/);
    expect(() => parseTlsCredsObject('tls-creds-x509,dir=/x')).toThrow(/needs id=NAME/);
    expect(() => parseTlsCredsObject('tls-creds-x509,id=a')).toThrow(/needs dir=PATH/);
    expect(() => parseTlsCredsObject(`tls-creds-x509,id=a,dir=${serverDir},endpoint=both`)).toThrow(/endpoint must be server or client/);
    expect(() => parseTlsCredsObject(`tls-creds-x509,id=a,dir=${serverDir},colour=red`)).toThrow(/unknown property 'colour'/);
    expect(() => parseTlsCredsObject('tls-creds-x509,id=a,dir=/nonexistent,endpoint=server')).toThrow(/cannot read \/nonexistent\/ca-cert.pem/);
    expect(() => parseTlsCredsObject(`tls-creds-x509,id=a,dir=${clientDir},endpoint=server`)).toThrow(/server-cert.pem/);
  });
});
