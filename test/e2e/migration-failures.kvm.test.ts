// Every way a migration can go wrong, each with real tsvmm processes over real TCP: the source must keep
// (and resume) its guest, the destination must never run a guest it did not fully receive, and every
// failure must say what happened.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import {
  DIRTIER, DIRTYING, destination, guestVerifies, loadedCuttingRelay, migrationEnd, migrationWhere, processPool, qmp, switchOverToFrozenDestination,
  truncatingRelay,
} from '../helpers/migration.js';
import { migrationPort } from '../helpers/tsvmm-process.js';

const MEM = '256M';
const STAMPS = 'start=0x1000000 size=0x4000000'; // 64 MiB of pages rewritten every pass
/** Slow enough that the first pass takes seconds, so a failure can land in the middle of it. */
const SLOW_BYTES_PER_S = 8 * 1024 * 1024;
const start = processPool();

async function dirtyingSource(name = 'src') {
  const src = start([DIRTIER, '--mem', MEM, '--cmdline', STAMPS], name);
  await src.waitForConsole(DIRTYING);
  const client = await qmp(src);
  await client.execute('migrate-set-parameters', { 'max-bandwidth': SLOW_BYTES_PER_S });
  return { src, client };
}

const midStream = (info: Record<string, any>) => info.status === 'active' && (info.ram?.transferred ?? 0) > 2 * 1024 * 1024;

describeKvm('failed and cancelled migrations', () => {
  it('destination killed mid-stream: the source reports failed, resumes, and its guest is intact', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM]);
    const { src, client } = await dirtyingSource();
    await client.execute('migrate', { uri });
    await migrationWhere(client, midStream, 'the first pass to be under way');
    dst.kill('SIGKILL');
    const info = await migrationEnd(client);
    expect(info.status).toBe('failed');
    expect(info['error-desc']).toMatch(/connection to the destination failed|the destination closed the connection/);
    expect(await client.execute('query-status')).toMatchObject({ running: true, status: 'running' });
    expect(await guestVerifies(src)).toMatch(/verify ok/);
    await client.execute('quit');
    expect(await src.exited).toBe(0);
  }, 300_000);

  it('migrate_cancel: cancelled, the destination does not resume, the source runs on and can migrate again', async () => {
    const first = await destination(start, [DIRTIER, '--mem', MEM], 'dst1');
    const { src, client } = await dirtyingSource();
    await client.execute('migrate', { uri: first.uri });
    await migrationWhere(client, midStream, 'the first pass to be under way');
    await client.execute('migrate_cancel');
    const info = await migrationEnd(client);
    expect(info.status).toBe('cancelled');
    expect(await first.dst.exited).toBe(8);
    expect(first.dst.stderr).toMatch(/incoming migration failed: the migration stream ended early, in state ram: the guest was not resumed/);
    expect(first.dst.console()).toBe('');
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    expect(await guestVerifies(src)).toMatch(/verify ok/);

    // Nothing is left over from the cancelled attempt: the next migration completes.
    const second = await destination(start, [DIRTIER, '--mem', MEM], 'dst2');
    await client.execute('migrate-set-parameters', { 'max-bandwidth': 0, 'x-verify': true });
    await client.execute('migrate', { uri: second.uri });
    expect((await migrationEnd(client)).status).toBe('completed');
    expect(await src.exited).toBe(0);
    expect(await guestVerifies(second.dst)).toMatch(/verify ok/);
  }, 300_000);

  it('a destination alive but stuck while the source\'s guest is stopped for the switch-over: migrate_cancel resumes it, and the destination never runs the guest', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', '32M']);
    try {
      const { src, client, events } = await switchOverToFrozenDestination(start, dst, uri);
      await client.execute('migrate_cancel');
      const info = await migrationEnd(client);
      expect(info.status).toBe('cancelled');
      expect(events.slice(events.indexOf('MIGRATION device'))).toEqual(['MIGRATION device', 'STOP', 'MIGRATION cancelled', 'RESUME']);
      expect(await client.execute('query-status')).toMatchObject({ status: 'running' });
      expect(await guestVerifies(src)).toMatch(/verify ok/);
    } finally {
      dst.kill('SIGCONT');
    }
    // Woken, the destination writes its next answer to a connection the source has closed: it fails,
    // and does not run the guest.
    expect(await dst.exited).toBe(8);
    expect(dst.stderr).toMatch(/incoming migration failed: migration connection failed: the source closed the connection/);
    expect(dst.stderr).not.toMatch(/incoming migration completed/);
  }, 300_000);

  it('a stream cut short: the destination refuses to resume, the source resumes', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM]);
    const [, host, port] = /^tcp:(.*):(\d+)$/.exec(uri)!;
    const relay = await truncatingRelay({ host: host!, port: Number(port) }, 3 * 1024 * 1024 + 17);
    try {
      const { src, client } = await dirtyingSource();
      await client.execute('migrate', { uri: relay.uri });
      const info = await migrationEnd(client);
      expect(info.status).toBe('failed');
      expect(await dst.exited).toBe(8);
      expect(dst.stderr).toMatch(/incoming migration failed: the migration stream ended early, in state ram: the guest was not resumed/);
      expect(dst.console()).toBe('');
      expect(await client.execute('query-status')).toMatchObject({ running: true });
      expect(await guestVerifies(src)).toMatch(/verify ok/);
    } finally {
      relay.close();
    }
  }, 300_000);

  // The source's migration fails once the destination has everything but before the source hears so;
  // the source then resumes its guest, so the destination must not run it too (two copies of one
  // guest, each believing it is the only one). The destination runs it only on the source's COMMIT.
  async function connectionLostAtLoaded(destinationEnv: Record<string, string>) {
    const uri = `tcp:127.0.0.1:${await migrationPort()}`;
    const dst = start([DIRTIER, '--mem', MEM, '--incoming', uri], 'dst', destinationEnv);
    await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), 'dst to listen');
    const [, host, port] = /^tcp:(.*):(\d+)$/.exec(uri)!;
    const relay = await loadedCuttingRelay({ host: host!, port: Number(port) });
    const { src, client } = await dirtyingSource();
    await client.execute('migrate-set-parameters', { 'max-bandwidth': 0 });
    await client.execute('migrate', { uri: relay.uri });
    const info = await migrationEnd(client);
    relay.close();
    expect(relay.cut()).toBe(true);
    return { dst, src, client, info };
  }

  it('the connection lost right after the destination\'s LOADED: the source resumes its guest, and the destination does not run it', async () => {
    const { dst, src, client, info } = await connectionLostAtLoaded({});
    expect(info.status).toBe('failed');
    expect(info['error-desc']).toMatch(/connection to the destination failed|the destination closed the connection/);
    expect(await dst.exited).toBe(8);
    expect(dst.stderr).toMatch(/incoming migration failed: the connection closed after LOADED, before the source's COMMIT: the guest was not resumed here/);
    expect(await client.execute('query-status')).toMatchObject({ running: true, status: 'running' });
    expect(await guestVerifies(src)).toMatch(/verify ok/);
  }, 300_000);

  it('with the destination\'s COMMIT wait switched off (test-only), the same lost connection leaves the guest running on both hosts: the case above is caught', async () => {
    const { dst, src, client, info } = await connectionLostAtLoaded({ TSVMM_TEST_ONLY_RESUME_ON_LOADED: '1' });
    expect(info.status).toBe('failed');
    expect(await client.execute('query-status')).toMatchObject({ running: true });
    const dstClient = await qmp(dst);
    expect(await dstClient.execute('query-status')).toMatchObject({ running: true, status: 'running' });
    // Two live copies of one guest, each checking its own stamps.
    expect(await guestVerifies(src)).toMatch(/verify ok/);
    expect(await guestVerifies(dst)).toMatch(/verify ok/);
    dstClient.close();
  }, 300_000);

  it('random bytes at the incoming port: a clear error, and no guest is started', async () => {
    const { dst, uri } = await destination(start, [DIRTIER, '--mem', MEM]);
    const [, host, port] = /^tcp:(.*):(\d+)$/.exec(uri)!;
    const socket = net.connect({ host: host!, port: Number(port) });
    socket.on('error', () => { /* the destination hangs up on garbage */ });
    socket.write(randomBytes(64 * 1024));
    expect(await dst.exited).toBe(8);
    expect(dst.stderr).toMatch(/incoming migration failed: not a tsvmm migration stream \(bad magic\)/);
    expect(dst.console()).toBe('');
    socket.destroy();
  }, 120_000);
});
