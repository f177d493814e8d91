// Across hosts: the source and the destination in two network namespaces joined by a veth pair, so the
// stream crosses a real (virtual) link between two network stacks rather than loopback.
import { afterAll, expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import { DIRTIER, DIRTYING, destination, guestVerifies, migrateVerified, migrationEnd, processPool, qmp } from '../helpers/migration.js';
import { makeHostPair } from '../helpers/netns.js';

const MEM = '256M';
const STAMPS = 'start=0x1000000 size=0x4000000';
const start = processPool();

describeKvm('live migration between two network namespaces', () => {
  const hosts = makeHostPair('mig');
  afterAll(() => { if (!('unavailable' in hosts)) hosts.remove(); });
  if ('unavailable' in hosts) {
    process.stderr.write(`\n*** migration-netns: SKIPPED: cannot make network namespaces here (${hosts.unavailable}); run as root with iproute2 and veth ***\n\n`);
    it.skip(`needs network namespaces: ${hosts.unavailable}`, () => {});
    return;
  }

  it('the dirtier migrates from host A to host B over the veth link; verify on; it verifies itself on B', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM], 'dst-b', hosts.b.ip, hosts.b.prefix);
    expect(uri).toMatch(/^tcp:10\.211\.0\.2:/);
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src-a', {}, hosts.a.prefix);
    await src.waitForConsole(DIRTYING);
    await migrateVerified(src, uri);
    expect(src.stderr).toMatch(/the VM now runs at tcp:10\.211\.0\.2:/);
    expect(await guestVerifies(dst)).toMatch(/verify ok/);
  }, 300_000);

  it('host B is unreachable from A on a port nobody listens on: failed, and A keeps its guest', async () => {
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src-a', {}, hosts.a.prefix);
    await src.waitForConsole(DIRTYING);
    const client = await qmp(src);
    await client.execute('migrate', { uri: `tcp:${hosts.b.ip}:1` });
    const info = await migrationEnd(client);
    expect(info.status).toBe('failed');
    expect(info['error-desc']).toMatch(/nothing listens at tcp:10\.211\.0\.2:1/);
    expect(await guestVerifies(src)).toMatch(/verify ok/);
  }, 300_000);
});
