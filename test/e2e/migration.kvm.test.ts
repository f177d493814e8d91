// Live migration between two real tsvmm processes over real TCP, driven over QMP as a QEMU user would.
import { expect, it } from 'vitest';
import { QmpClient } from '../../src/control/qmp-client.js';
import { describeKvm } from '../helpers/kvm.js';
import {
  DIRTIER, DIRTYING, destination, guestVerifies, migrateVerified, migrationEnd, processPool, qmp, sleep,
} from '../helpers/migration.js';
import { randomBzImageFile } from '../helpers/linux-images.js';
import { guest } from '../helpers/paths.js';
import { anonResidentKiB } from '../helpers/proc-status.js';
import { TsvmmProcess, migrationPort } from '../helpers/tsvmm-process.js';

const MEM = '256M';
const IDLE = guest('idle');
const STAMPS = 'start=0x1000000 size=0x4000000'; // 64 MiB of pages rewritten every pass
const start = processPool();

describeKvm('live migration between two tsvmm processes', () => {
  it('a 1 GiB dirtier migrates while dirtying; verify on; it verifies its own stamps on the destination', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', '1G']);
    const src = start([DIRTIER, '--mem', '1G', '--cmdline', STAMPS], 'src');
    await src.waitForConsole(DIRTYING);
    await sleep(300); // let it dirty for a while

    const client = await qmp(src);
    expect(await client.execute('query-status')).toMatchObject({ running: true, status: 'running' });
    await client.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-verify', state: true }] });
    await client.execute('migrate', { uri });
    const info = await migrationEnd(client);
    expect(info.status, info['error-desc']).toBe('completed');
    expect(info.ram?.transferred ?? 1).toBeGreaterThan(0);
    expect(await src.exited).toBe(0); // the source exits only after completion
    expect(src.stderr).toMatch(/the VM now runs at tcp:127\.0\.0\.1/);
    await dst.waitFor(() => /incoming migration completed: [\d.]+ MiB in \d+ passes, \d+ ms from the connection; the guest runs here\n/.test(dst.stderr), 'dst to say the guest arrived');

    // The guest, now on the destination, checks every stamp it wrote on the source and goes on.
    dst.type('v');
    await dst.waitForConsole(/dirtier: verify (ok|FAILED)[^\n]*\n/);
    expect(dst.console()).toMatch(/dirtier: verify ok pass=\d+ pages=16384/);
    dst.type('q');
    expect(await dst.exited).toBe(0);
  }, 300_000);

  it("an idle guest, halted between the ticks of its LAPIC timer, migrates; the timer ticks on, on the destination, which says RESUME and then MIGRATION completed, QEMU's order", async () => {
    const { dst, uri } = await destination(start, [IDLE, '--mem', MEM]);
    const dstEvents: string[] = [];
    (await qmp(dst)).on('event', (e) => dstEvents.push(e.event === 'MIGRATION' ? `MIGRATION ${(e.data as { status: string }).status}` : e.event));
    const src = start([IDLE, '--mem', MEM], 'src');
    await src.waitForConsole(/idle: halting\n/);
    await sleep(300); // some ticks on the source first: the count must carry over, not restart

    await migrateVerified(src, uri);
    await expect.poll(() => dstEvents).toContain('MIGRATION completed');
    expect(dstEvents.slice(-2)).toEqual(['RESUME', 'MIGRATION completed']);

    // The guest only wakes for its timer: were the LAPIC timer not restored, it would never answer.
    dst.type('t');
    await dst.waitForConsole(/idle: ticks \d+\n/);
    await sleep(200);
    dst.type('t');
    await dst.waitForConsole(/(idle: ticks \d+\n[^]*){2}/);
    const [before, after] = [...dst.console().matchAll(/idle: ticks (\d+)\n/g)].map((m) => Number(m[1]));
    expect(before).toBeGreaterThan(10); // ~100 a second since it started on the source
    expect(after).toBeGreaterThan(before);
    dst.type('q');
    expect(await dst.exited).toBe(0);
  }, 300_000);

  it('a destination started with --mem-prealloc keeps all its RAM through the migration: zero pages are cleared in place, not handed back', async () => {
    const { dst, uri } = await destination(start, [IDLE, '--mem', MEM, '--mem-prealloc']);
    const src = start([IDLE, '--mem', MEM], 'src');
    await src.waitForConsole(/idle: halting\n/);
    await migrateVerified(src, uri); // the idle guest's RAM is nearly all zero pages
    expect(anonResidentKiB(dst.pid)).toBeGreaterThanOrEqual(256 * 1024);
    dst.type('t');
    await dst.waitForConsole(/idle: ticks \d+\n/);
    dst.type('q');
    expect(await dst.exited).toBe(0);
  }, 300_000);

  // An incoming VM leaves the stream's zero pages alone where its RAM is still as allocated, which it
  // knows from the marks on every VMM write since its creation (Vm.ramZeroUnlessMarked). A destination
  // whose loader wrote 2 MiB of another kernel where the source's RAM is zero (its idle guest's RAM at
  // 16 MiB was never written) shows them doing so.
  const otherKernel = (): string => randomBzImageFile(2 * 1024 * 1024);

  it('a destination started with another kernel: verify passes, the pages its loader wrote are all cleared or overwritten', async () => {
    const { dst, uri } = await destination(start, ['--kernel', otherKernel(), '--mem', MEM, '--mem-prealloc']);
    const src = start([IDLE, '--mem', MEM], 'src');
    await src.waitForConsole(/idle: halting\n/);
    await migrateVerified(src, uri);
    dst.type('t');
    await dst.waitForConsole(/idle: ticks \d+\n/);
    dst.type('q');
    expect(await dst.exited).toBe(0);
  }, 300_000);

  it('with the loader\'s writes left unmarked (test-only), its pages stay: verify catches them, the destination refuses, the source runs on', async () => {
    const uri = `tcp:127.0.0.1:${await migrationPort()}`;
    const dst = start(['--kernel', otherKernel(), '--mem', MEM, '--mem-prealloc', '--incoming', uri], 'dst', { TSVMM_TEST_ONLY_UNMARKED_LOADER: '1' });
    await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), 'dst to listen');
    const src = start([IDLE, '--mem', MEM], 'src');
    await src.waitForConsole(/idle: halting\n/);
    const client = await qmp(src);
    await client.execute('migrate-set-parameters', { 'x-verify': true });
    await client.execute('migrate', { uri });
    const info = await migrationEnd(client);
    expect(info.status).toBe('failed');
    // The loader's 2 MiB at 16 MiB among them: verify reads RAM itself, whatever the marks say.
    expect(info['error-desc']).toMatch(/the destination refused the VM: RAM verification failed: guest memory .*0x1000000-0x11fffff/);
    expect(await dst.exited).not.toBe(0);
    expect(dst.console()).toBe('');
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    await client.execute('quit');
    expect(await src.exited).toBe(0);
  }, 300_000);

  it('a failed migration (destination gone) leaves the source guest running', async () => {
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src');
    await src.waitForConsole(DIRTYING);
    const client = await qmp(src);
    await client.execute('migrate', { uri: `tcp:127.0.0.1:${await migrationPort()}` }); // nobody listens
    const info = await migrationEnd(client);
    expect(info.status).toBe('failed');
    expect(info['error-desc']).toMatch(/nothing listens at tcp:127\.0\.0\.1/);
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    src.type('v');
    await src.waitForConsole(/dirtier: verify ok/);
    await client.execute('quit');
    expect(await src.exited).toBe(0);
  }, 300_000);

  it('the destination refuses a machine shape mismatch before touching its guest; the source runs on', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', '128M']);
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src');
    await src.waitForConsole(DIRTYING);
    const client = await qmp(src);
    await client.execute('migrate', { uri });
    const info = await migrationEnd(client);
    expect(info.status).toBe('failed');
    expect(info['error-desc']).toMatch(/machine shape mismatch: the source has 268435456 bytes of RAM and this VM 134217728: start it with --mem 256M/);
    expect(await dst.exited).toBe(8);
    expect(dst.stderr).toMatch(/incoming migration failed: machine shape mismatch/);
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    await client.execute('quit');
  }, 300_000);

  // The 2015 condition: memslots split and merged on the source throughout the migration, one split
  // with the vCPUs stopped right before the final sync.
  /** Also returns the source's run-state events (STOP, RESUME) seen during the migration, in order. */
  async function migrateWhileChurning(env: Record<string, string>): Promise<{ info: Record<string, any>; src: TsvmmProcess; dst: TsvmmProcess; client: QmpClient; runEvents: string[] }> {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM]);
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src', { TSVMM_TEST_ONLY_CHURN_MEMSLOTS: '1', ...env });
    await src.waitForConsole(DIRTYING);
    await sleep(300);
    const client = await qmp(src);
    const runEvents: string[] = [];
    client.on('event', (e) => { if (e.event === 'STOP' || e.event === 'RESUME') runEvents.push(e.event); });
    await client.execute('migrate-set-parameters', { 'x-verify': true });
    await client.execute('migrate', { uri });
    return { info: await migrationEnd(client), src, dst, client, runEvents };
  }

  it('memslots churned during migration: every page arrives (verify passes, the guest checks itself)', async () => {
    const { info, src, dst, runEvents } = await migrateWhileChurning({});
    expect(info.status, info['error-desc']).toBe('completed');
    expect(runEvents).toEqual(['STOP']); // the switch-over stops the guest here, as QEMU's source says
    expect(src.stderr).toMatch(/test-only switch churnMemslots is on/);
    expect(await src.exited).toBe(0);
    dst.type('v');
    await dst.waitForConsole(/dirtier: verify (ok|FAILED)[^\n]*\n/);
    expect(dst.console()).toMatch(/dirtier: verify ok/);
    dst.type('q');
    expect(await dst.exited).toBe(0);
  }, 300_000);

  it('with sync-before-delete switched off, verify catches the loss: the destination refuses, the source runs on', async () => {
    const { info, src, dst, client, runEvents } = await migrateWhileChurning({ TSVMM_TEST_ONLY_SKIP_SYNC_BEFORE_DELETE: '1' });
    expect(info.status).toBe('failed');
    expect(runEvents).toEqual(['STOP', 'RESUME']); // stopped for the switch-over, running again here
    expect(info['error-desc']).toMatch(/the destination refused the VM: RAM verification failed: guest memory 0x/);
    expect(await dst.exited).toBe(8);
    expect(dst.stderr).toMatch(/incoming migration failed: RAM verification failed/);
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    await client.execute('quit');
    expect(await src.exited).toBe(0);
  }, 300_000);

  it('ping-pong: the same guest migrates back and forth 10 times and verifies itself after every hop', async () => {
    const PING_MEM = '64M';
    let here = start([DIRTIER, '--mem', PING_MEM, '--cmdline', 'start=0x1000000 size=0x1000000'], 'hop0');
    await here.waitForConsole(DIRTYING);
    for (let hop = 1; hop <= 10; hop++) {
      const { dst, uri } = await destination(start, [DIRTIER, '--mem', PING_MEM], `hop${hop}`);
      await migrateVerified(here, uri, `hop ${hop}`);
      expect(await guestVerifies(dst), `hop ${hop}`).toMatch(/verify ok/);
      here = dst;
    }
    here.type('q');
    expect(await here.exited).toBe(0);
  }, 1_200_000);

  it('multifd: RAM over 3 channel connections from worker threads; verify on; the guest verifies itself', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM]);
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src');
    await src.waitForConsole(DIRTYING);
    const client = await qmp(src);
    await client.execute('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
    await client.execute('migrate-set-parameters', { 'multifd-channels': 3, 'x-verify': true });
    await client.execute('migrate', { uri });
    let channels = 0;
    const info = await migrationEnd(client, (i) => { channels = i['multifd-channels'] ?? channels; });
    expect(info.status, info['error-desc']).toBe('completed');
    expect(channels).toBe(3);
    expect(await src.exited).toBe(0);
    expect(await guestVerifies(dst)).toMatch(/verify ok/);
  }, 300_000);
});
