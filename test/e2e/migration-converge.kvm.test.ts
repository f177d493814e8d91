// Auto-converge: a guest that dirties its pages faster than the link carries them never fits the
// downtime limit on its own; throttling its vCPUs, more each pass, makes the migration complete.
import { expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import {
  DIRTIER, DIRTYING, destination, guestVerifies, migrationEnd, migrationWhere, processPool, qmp,
} from '../helpers/migration.js';

const MEM = '64M';
const STAMPS = 'start=0x1000000 size=0x800000'; // 2048 pages, every one rewritten each pass
// 300 ms of it is 1229 pages, fewer than the 2048 the guest rewrites in every pass, which at this rate
// takes 500 ms: unthrottled, no pass fits. Throttled to 99%, the guest must dirty under 4096 pages/s
// (the link's rate) for the passes to shrink: on kvm_pvm it still dirtied ~1000 a second, which at
// 4 MiB/s (1024 pages/s) was the link's own rate, and one CI run never converged.
const LINK_BYTES_PER_S = 16 * 1024 * 1024;
const start = processPool();

async function slowLinkMigration(autoConverge: boolean) {
  const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM]);
  const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src');
  await src.waitForConsole(DIRTYING);
  const client = await qmp(src);
  // Before any migration, as QEMU's: an empty answer, no status.
  expect(await client.execute('query-migrate')).toEqual({});
  await client.execute('migrate-set-capabilities', { capabilities: [{ capability: 'auto-converge', state: autoConverge }] });
  await client.execute('migrate-set-parameters', { 'max-bandwidth': LINK_BYTES_PER_S, 'downtime-limit': 300, 'x-verify': true });
  await client.execute('migrate', { uri });
  return { src, dst, client };
}

describeKvm('auto-converge', () => {
  it('off: the migration keeps going pass after pass without converging (so the test below means something)', async () => {
    const { src, client } = await slowLinkMigration(false);
    // expected-downtime falls within a pass as its pages go out; its peak (at each pass's start) is
    // what the switch-over decision sees. Pass 1's (all of RAM still to send) says nothing of convergence.
    let peakDowntime = 0;
    const info = await migrationWhere(client, (i) => {
      if ((i.ram?.['dirty-sync-count'] ?? 0) >= 2) peakDowntime = Math.max(peakDowntime, i['expected-downtime'] ?? 0);
      return (i.ram?.['dirty-sync-count'] ?? 0) >= 10;
    }, '10 passes');
    expect(info.status).toBe('active');
    expect(info['cpu-throttle-percentage']).toBeUndefined();
    expect(peakDowntime).toBeGreaterThan(300);
    await client.execute('migrate_cancel');
    expect((await migrationEnd(client)).status).toBe('cancelled');
    expect(await guestVerifies(src)).toMatch(/verify ok/);
  }, 300_000);

  it('on: vCPUs are throttled more each pass until a pass fits, and the migration completes', async () => {
    const { src, dst, client } = await slowLinkMigration(true);
    let maxThrottle = 0;
    const info = await migrationEnd(client, (i) => { maxThrottle = Math.max(maxThrottle, i['cpu-throttle-percentage'] ?? 0); });
    expect(info.status, info['error-desc']).toBe('completed');
    expect(maxThrottle).toBeGreaterThanOrEqual(20);
    expect(await src.exited).toBe(0);
    expect(await guestVerifies(dst)).toMatch(/verify ok/);
  }, 300_000);
});
