// Live migration between two real tsvmm processes over real TCP, driven over QMP as a QEMU user would.
import { afterEach, expect, it } from 'vitest';
import { QmpClient } from '../../src/control/qmp-client.js';
import { describeKvm } from '../helpers/kvm.js';
import { guest } from '../helpers/paths.js';
import { TsvmmProcess, migrationPort } from '../helpers/tsvmm-process.js';

const DIRTIER = guest('dirtier');
const MEM = '256M';
const STAMPS = 'start=0x1000000 size=0x4000000'; // 64 MiB of pages rewritten every pass
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const running: TsvmmProcess[] = [];
afterEach(() => { running.splice(0).forEach((p) => p.kill()); });

function start(args: string[], name: string, env: Record<string, string> = {}): TsvmmProcess {
  const p = new TsvmmProcess(args, name, env);
  running.push(p);
  return p;
}

async function qmp(p: TsvmmProcess): Promise<QmpClient> {
  await p.waitForQmp();
  return QmpClient.connect(`unix:${p.qmpPath}`);
}

/**
 * Polls query-migrate until the migration ends. A completed source exits soon after, so the QMP
 * socket may close before the last poll: the MIGRATION event then tells the outcome.
 */
async function migrationEnd(client: QmpClient): Promise<Record<string, any>> {
  let lastEvent: string | undefined;
  client.on('event', (e) => { if (e.event === 'MIGRATION') lastEvent = (e.data as { status: string }).status; });
  let last: Record<string, any> = {};
  for (;;) {
    try {
      last = (await client.execute('query-migrate')) as Record<string, any>;
    } catch (e) {
      if (lastEvent === 'completed') return { ...last, status: 'completed' };
      throw e;
    }
    if (['completed', 'failed', 'cancelled'].includes(last.status)) return last;
    await sleep(50);
  }
}

describeKvm('live migration between two tsvmm processes', () => {
  it('the dirtier migrates while dirtying; verify on; it verifies its own stamps on the destination', async () => {
    const port = migrationPort();
    const dst = start([DIRTIER, '--mem', MEM, '--incoming', `tcp:127.0.0.1:${port}`], 'dst');
    await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), 'the destination to listen');
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src');
    await src.waitForConsole(/dirtier: start=/);
    await sleep(300); // let it dirty for a while

    const client = await qmp(src);
    expect(await client.execute('query-status')).toMatchObject({ running: true, status: 'running' });
    await client.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-verify', state: true }] });
    await client.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const info = await migrationEnd(client);
    expect(info.status, info['error-desc']).toBe('completed');
    expect(info.ram?.transferred ?? 1).toBeGreaterThan(0);
    expect(await src.exited).toBe(0); // the source exits only after completion
    expect(src.stderr).toMatch(/the VM now runs at tcp:127\.0\.0\.1/);

    // The guest, now on the destination, checks every stamp it wrote on the source and goes on.
    dst.type('v');
    await dst.waitForConsole(/dirtier: verify (ok|FAILED)[^\n]*\n/);
    expect(dst.console()).toMatch(/dirtier: verify ok pass=\d+ pages=16384/);
    dst.type('q');
    expect(await dst.exited).toBe(0);
  }, 300_000);

  it('a failed migration (destination gone) leaves the source guest running', async () => {
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src');
    await src.waitForConsole(/dirtier: start=/);
    const client = await qmp(src);
    await client.execute('migrate', { uri: `tcp:127.0.0.1:${migrationPort()}` }); // nobody listens
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
    const port = migrationPort();
    const dst = start([DIRTIER, '--mem', '128M', '--incoming', `tcp:127.0.0.1:${port}`], 'dst');
    await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), 'the destination to listen');
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src');
    await src.waitForConsole(/dirtier: start=/);
    const client = await qmp(src);
    await client.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
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
  async function migrateWhileChurning(env: Record<string, string>): Promise<{ info: Record<string, any>; src: TsvmmProcess; dst: TsvmmProcess; client: QmpClient }> {
    const port = migrationPort();
    const dst = start([DIRTIER, '--mem', MEM, '--incoming', `tcp:127.0.0.1:${port}`], 'dst');
    await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), 'the destination to listen');
    const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], 'src', { TSVMM_TEST_ONLY_CHURN_MEMSLOTS: '1', ...env });
    await src.waitForConsole(/dirtier: start=/);
    await sleep(300);
    const client = await qmp(src);
    await client.execute('migrate-set-parameters', { 'x-verify': true });
    await client.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    return { info: await migrationEnd(client), src, dst, client };
  }

  it('memslots churned during migration: every page arrives (verify passes, the guest checks itself)', async () => {
    const { info, src, dst } = await migrateWhileChurning({});
    expect(info.status, info['error-desc']).toBe('completed');
    expect(src.stderr).toMatch(/test-only switch churnMemslots is on/);
    expect(await src.exited).toBe(0);
    dst.type('v');
    await dst.waitForConsole(/dirtier: verify (ok|FAILED)[^\n]*\n/);
    expect(dst.console()).toMatch(/dirtier: verify ok/);
    dst.type('q');
    expect(await dst.exited).toBe(0);
  }, 300_000);

  it('with sync-before-delete switched off, verify catches the loss: the destination refuses, the source runs on', async () => {
    const { info, src, dst, client } = await migrateWhileChurning({ TSVMM_TEST_ONLY_SKIP_SYNC_BEFORE_DELETE: '1' });
    expect(info.status).toBe('failed');
    expect(info['error-desc']).toMatch(/the destination refused the VM: RAM verification failed: guest memory 0x/);
    expect(await dst.exited).toBe(8);
    expect(dst.stderr).toMatch(/incoming migration failed: RAM verification failed/);
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    await client.execute('quit');
    expect(await src.exited).toBe(0);
  }, 300_000);
});
