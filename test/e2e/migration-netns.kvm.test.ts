// Across hosts: the source and the destination in two network namespaces joined by a veth pair, so the
// stream crosses a real (virtual) link between two network stacks rather than loopback; and host B
// dropping off that link mid-migration, which no reset announces.
import { afterAll, expect, it } from 'vitest';
import { ExitStatus } from '../../src/cli/exit-status.js';
import { describeKvm } from '../helpers/kvm.js';
import {
  DIRTIER, DIRTYING, destination, guestVerifies, migrateVerified, migrationEnd, migrationWhere, processPool, qmp, sleep, switchOverToFrozenDestination,
} from '../helpers/migration.js';
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

  /**
   * Starts a migration from A to B (over `multifdChannels` channels too, if any), slowed
   * (max-bandwidth) so that it is still under way, with A's x-peer-timeout set to `peerTimeoutMs`;
   * once it has sent a few MiB, sets B's end of the link down.
   */
  async function migrateThenLoseB(peerTimeoutMs: number, multifdChannels = 0) {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM], 'dst-b', hosts.b.ip, hosts.b.prefix);
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src-a', {}, hosts.a.prefix);
    await src.waitForConsole(DIRTYING);
    const client = await qmp(src);
    if (multifdChannels > 0) {
      await client.execute('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
      await client.execute('migrate-set-parameters', { 'multifd-channels': multifdChannels });
    }
    await client.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 2 ** 20, 'x-peer-timeout': peerTimeoutMs });
    expect(await client.execute('query-migrate-parameters')).toMatchObject({ 'x-peer-timeout': peerTimeoutMs });
    await client.execute('migrate', { uri });
    await migrationWhere(client, (i) => i.status === 'active' && i.ram?.transferred > 4 * 2 ** 20, 'a few MiB sent');
    hosts.setLink('b', false);
    return { src, dst, client };
  }

  for (const [channels, how] of [[0, 'one connection'], [2, 'multifd, 2 channels each sending from its own thread']] as const) {
    it(`host B drops off the network mid-migration (${how}): A (x-peer-timeout 2000) fails, naming the timeout, and keeps its guest`, async () => {
      const { src, client } = await migrateThenLoseB(2000, channels);
      try {
        const info = await migrationEnd(client);
        expect(info.status).toBe('failed');
        expect(info['error-desc']).toMatch(/the destination acknowledged nothing for 2000 ms \(x-peer-timeout\), so it is taken for dead/);
        expect(await client.execute('query-status')).toMatchObject({ status: 'running' });
      } finally {
        hosts.setLink('b', true);
      }
      expect(await guestVerifies(src)).toMatch(/verify ok/);
    }, 300_000);
  }

  it('with x-peer-timeout 0 (the kernel\'s TCP defaults), the same loss leaves A\'s migration waiting, which migrate_cancel ends: the case above is caught by the timeout', async () => {
    const { src, client } = await migrateThenLoseB(0);
    try {
      // Three times the 2000 ms above: still under way (TCP retransmits for ~15 min before it gives up).
      await sleep(6000);
      expect(await client.execute('query-migrate')).toMatchObject({ status: 'active' });
      await client.execute('migrate_cancel');
      expect((await migrationEnd(client)).status).toBe('cancelled');
    } finally {
      hosts.setLink('b', true);
    }
    expect(await guestVerifies(src)).toMatch(/verify ok/);
  }, 300_000);

  it('host B dies while A\'s guest is stopped for the switch-over: A (x-peer-timeout 3000) fails, resumes its guest, and never commits', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', '32M'], 'dst-b', hosts.b.ip, hosts.b.prefix);
    try {
      // B frozen, A's guest stopped for the switch-over; then B's host is gone from the link, and LOADED never comes.
      const { src, client, events } = await switchOverToFrozenDestination(start, dst, uri, { parameters: { 'x-peer-timeout': 3000 }, name: 'src-a', prefix: hosts.a.prefix });
      hosts.setLink('b', false);
      const info = await migrationEnd(client);
      expect(info.status).toBe('failed');
      expect(info['error-desc']).toMatch(/the destination acknowledged nothing for 3000 ms \(x-peer-timeout\)/);
      expect(events.slice(events.indexOf('MIGRATION device'))).toEqual(['MIGRATION device', 'STOP', 'MIGRATION failed', 'RESUME']);
      expect(await client.execute('query-status')).toMatchObject({ status: 'running' });
      expect(await guestVerifies(src)).toMatch(/verify ok/);
    } finally {
      hosts.setLink('b', true);
      dst.kill('SIGCONT');
    }
  }, 300_000);

  it('host A dies mid-migration: B (x-peer-timeout 2000, set before A connects) fails naming it, and exits without running the guest', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM], 'dst-b', hosts.b.ip, hosts.b.prefix);
    await (await qmp(dst)).execute('migrate-set-parameters', { 'x-peer-timeout': 2000 });
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src-a', {}, hosts.a.prefix);
    await src.waitForConsole(DIRTYING);
    const client = await qmp(src);
    await client.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 2 ** 20 });
    await client.execute('migrate', { uri });
    await migrationWhere(client, (i) => i.status === 'active' && i.ram?.transferred > 4 * 2 ** 20, 'a few MiB sent');
    // A freezes and its host leaves the link: B hears nothing more, not even a reset.
    process.kill(src.pid, 'SIGSTOP');
    hosts.setLink('a', false);
    try {
      expect(await dst.exited).toBe(ExitStatus.MIGRATION_FAILED);
      expect(dst.stderr).toMatch(/incoming migration failed: migration connection failed: the source acknowledged nothing for 2000 ms \(x-peer-timeout\)/);
      expect(dst.stderr).not.toMatch(/incoming migration completed/);
    } finally {
      hosts.setLink('a', true);
      process.kill(src.pid, 'SIGCONT');
    }
  }, 300_000);

  it('x-peer-timeout takes 0 to 3600000 ms; other values are refused with the range', async () => {
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src-a', {}, hosts.a.prefix);
    await src.waitForConsole(DIRTYING);
    const client = await qmp(src);
    expect(await client.execute('query-migrate-parameters')).toMatchObject({ 'x-peer-timeout': 30000 });
    await expect(client.execute('migrate-set-parameters', { 'x-peer-timeout': 3_600_001 })).rejects.toThrow(/'x-peer-timeout' expects a value between 0 \(off\) and 3600000 ms/);
    await expect(client.execute('migrate-set-parameters', { 'x-peer-timeout': -1 })).rejects.toThrow(/x-peer-timeout/);
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
