// Migration over TLS between two real tsvmm processes, configured the way QEMU is: --object
// tls-creds-x509 on both sides, migrate-set-parameters tls-creds, and a destination started with
// --incoming defer that listens on migrate-incoming.
import { expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import { DIRTIER, DIRTYING, guestVerifies, migrationEnd, processPool, qmp } from '../helpers/migration.js';
import { makeCa, makeCreds } from '../helpers/tls-certs.js';
import { migrationPort } from '../helpers/tsvmm-process.js';

const MEM = '128M';
const STAMPS = 'start=0x1000000 size=0x2000000';
const start = processPool();
const ca = makeCa('tsvmm-test-ca');
const serverCreds = makeCreds(ca, 'server', ['127.0.0.1']);
const creds = (dir: string, endpoint: string) => `tls-creds-x509,id=tls0,dir=${dir},endpoint=${endpoint}`;

async function tlsMigration(clientDir: string, multifdChannels = 0) {
  const dst = start([DIRTIER, '--mem', MEM, '--incoming', 'defer', '--object', creds(serverCreds, 'server')], 'dst');
  const dstQmp = await qmp(dst);
  await dstQmp.execute('migrate-set-parameters', { 'tls-creds': 'tls0' });
  const uri = `tcp:127.0.0.1:${await migrationPort()}`;
  await dstQmp.execute('migrate-incoming', { uri });
  const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS, '--object', creds(clientDir, 'client')], 'src');
  await src.waitForConsole(DIRTYING);
  const client = await qmp(src);
  await client.execute('migrate-set-parameters', { 'tls-creds': 'tls0', 'x-verify': true });
  if (multifdChannels > 0) {
    await client.execute('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
    await client.execute('migrate-set-parameters', { 'multifd-channels': multifdChannels });
  }
  await client.execute('migrate', { uri });
  return { src, dst, client, info: await migrationEnd(client) };
}

describeKvm('migration over TLS', () => {
  it('completes with certificates from one CA; the guest verifies itself on the destination', async () => {
    const { src, dst, info } = await tlsMigration(makeCreds(ca, 'client', ['source']));
    expect(info.status, info['error-desc']).toBe('completed');
    expect(await src.exited).toBe(0);
    expect(await guestVerifies(dst)).toMatch(/verify ok/);
  }, 300_000);

  it('a source that does not trust the destination\'s certificate fails the migration; both guests stay safe', async () => {
    const { dst, src, client, info } = await tlsMigration(makeCreds(ca, 'client', ['source'], makeCa('someone-else')));
    expect(info.status).toBe('failed');
    expect(info['error-desc']).toMatch(/TLS handshake with the destination failed: self[- ]signed certificate in certificate chain/);
    expect(await dst.exited).toBe(8);
    expect(dst.stderr).toMatch(/incoming migration failed: TLS handshake with the source failed/);
    expect(dst.console()).toBe('');
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    expect(await guestVerifies(src)).toMatch(/verify ok/);
  }, 300_000);

  it('multifd channels run over TLS too', async () => {
    const { src, dst, info } = await tlsMigration(makeCreds(ca, 'client', ['source']), 2);
    expect(info.status, info['error-desc']).toBe('completed');
    expect(await src.exited).toBe(0);
    expect(await guestVerifies(dst)).toMatch(/verify ok/);
  }, 300_000);
});
