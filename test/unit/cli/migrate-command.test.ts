import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrateCommand, parseBandwidth, type MigrateIo } from '../../../src/cli/migrate-command.js';
import { formatProgress, formatSize, formatSummary } from '../../../src/cli/progress.js';
import { QmpServer } from '../../../src/control/qmp-server.js';
import { VmControlError, type MigrationInfo } from '../../../src/control/vm-control.js';
import { FakeVmControl, ram, tempSocketPath } from '../control/fake-vm-control.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

const setup: MigrationInfo = { status: 'setup' };
const active1: MigrationInfo = {
  status: 'active', 'total-time': 100, 'expected-downtime': 40,
  ram: ram({ transferred: 123.4 * MiB, remaining: 5.6 * MiB, 'dirty-pages-rate': 1234, mbps: 950.3, 'dirty-sync-count': 1 }),
};
const active2: MigrationInfo = {
  status: 'active', 'total-time': 900, 'expected-downtime': 12,
  ram: ram({ transferred: 1000 * MiB, remaining: 1 * MiB, 'dirty-pages-rate': 20, mbps: 990, 'dirty-sync-count': 2 }),
};
const completed: MigrationInfo = {
  status: 'completed', 'total-time': 1234, downtime: 12, 'setup-time': 3,
  ram: ram({ transferred: 1.02 * GiB, remaining: 0, normal: 260000, duplicate: 1200, mbps: 1000, 'dirty-sync-count': 3 }),
};
const failed: MigrationInfo = { status: 'failed', 'error-desc': 'destination refused: RAM hash mismatch', 'total-time': 500 };

/** Captures what the command writes; `interrupt()` plays Ctrl-C. */
function fakeIo(tty = false) {
  let out = '';
  let err = '';
  let handler: (() => void) | undefined;
  const io: MigrateIo = {
    stdout: { write: (t: string) => { out += t; } },
    stderr: { write: (t: string) => { err += t; }, isTTY: tty },
    onInterrupt: (h) => { handler = h; return () => { handler = undefined; }; },
  };
  return {
    io,
    stdout: () => out,
    stderr: () => err,
    interrupt: () => handler?.(),
    listening: () => handler !== undefined,
  };
}

let sock: ReturnType<typeof tempSocketPath>;
let control: FakeVmControl;
let server: QmpServer;
let qmp: string;

beforeEach(async () => {
  sock = tempSocketPath();
  control = new FakeVmControl();
  qmp = `unix:${sock.path}`;
  server = await QmpServer.listen(qmp, control, { log: () => {} });
});

afterEach(async () => {
  await server.close();
  sock.cleanup();
});

describe('tsvmm migrate', () => {
  it('sets the parameters, migrates, shows progress per poll and prints the summary', async () => {
    control.play(setup, active1, active2, completed);
    const t = fakeIo();
    const status = await migrateCommand(
      ['--qmp', qmp, '--downtime-limit', '50', '--max-bandwidth', '100M', '--verify', '--interval', '5', 'tcp:10.0.0.2:4444'],
      t.io,
    );
    expect(status).toBe(0);
    expect(control.calls.filter((c) => c[0] !== 'queryMigrate')).toEqual([
      ['setMigrationParameters', { 'downtime-limit': 50, 'max-bandwidth': 100 * MiB, 'x-verify': true }],
      ['migrate', 'tcp:10.0.0.2:4444'],
    ]);
    expect(t.stderr()).toBe([
      'migration setup',
      'pass 1  sent 123.4 MiB  remaining 5.6 MiB  dirty 1234 pages/s  bw 950.3 Mbit/s  expected downtime 40 ms',
      'pass 2  sent 1000.0 MiB  remaining 1.0 MiB  dirty 20 pages/s  bw 990.0 Mbit/s  expected downtime 12 ms',
      '',
    ].join('\n'));
    expect(t.stdout()).toBe('migration completed: total 1234 ms, downtime 12 ms, 3 dirty syncs, sent 1.02 GiB (260000 pages, 1200 zero pages)\n');
    expect(t.listening()).toBe(false);
  });

  it('--multifd-channels, --tls-creds and --peer-timeout set the capability and parameters before migrate', async () => {
    control.play(completed);
    const t = fakeIo();
    expect(await migrateCommand(['--qmp', qmp, '--multifd-channels', '4', '--tls-creds', 'tls0', '--tls-hostname', 'dst.example', '--peer-timeout', '0', '--interval', '5', 'tcp:10.0.0.2:4444'], t.io)).toBe(0);
    expect(control.calls.filter((c) => c[0] !== 'queryMigrate')).toEqual([
      ['setMigrationParameters', { 'tls-creds': 'tls0', 'tls-hostname': 'dst.example', 'x-peer-timeout': 0, 'multifd-channels': 4 }],
      ['setMigrationCapabilities', [{ capability: 'multifd', state: true }]],
      ['migrate', 'tcp:10.0.0.2:4444'],
    ]);
  });

  it('writes a progress line to a log only when it changes', async () => {
    control.play(setup, active1, active1, active1, active2, active2, completed);
    const t = fakeIo();
    expect(await migrateCommand(['--qmp', qmp, '--interval', '5', 'tcp:10.0.0.2:4444'], t.io)).toBe(0);
    expect(t.stderr().split('\n').map((l) => l.slice(0, 6))).toEqual(['migrat', 'pass 1', 'pass 2', '']);
  });

  it('redraws one progress line on a terminal', async () => {
    control.play(active1, active2, completed);
    const t = fakeIo(true);
    expect(await migrateCommand(['--qmp', qmp, '--interval', '5', 'tcp:10.0.0.2:4444'], t.io)).toBe(0);
    expect(t.stderr()).toMatch(/^\rpass 1 .*\x1b\[K\rpass 2 .*\x1b\[K\n$/);
    // No parameters given: none set.
    expect(control.callNames()).not.toContain('setMigrationParameters');
  });

  it('prints the final query-migrate answer as JSON with --json, and no progress', async () => {
    control.play(setup, active1, active1, completed);
    const t = fakeIo();
    expect(await migrateCommand(['--qmp', qmp, '--json', '--interval', '5', 'tcp:10.0.0.2:4444'], t.io)).toBe(0);
    expect(JSON.parse(t.stdout())).toEqual(completed);
    expect(t.stderr()).toBe('');
  });

  it('exits 8 with the VM\'s reason when the migration fails', async () => {
    control.play(setup, active1, active2, failed);
    const t = fakeIo();
    expect(await migrateCommand(['--qmp', qmp, '--interval', '5', 'tcp:10.0.0.2:4444'], t.io)).toBe(8);
    expect(t.stdout()).toBe('');
    expect(t.stderr().split('\n').at(-2)).toBe('tsvmm: migration failed: destination refused: RAM hash mismatch');
    const j = fakeIo();
    control.play(failed);
    expect(await migrateCommand(['--qmp', qmp, '--json', 'tcp:10.0.0.2:4444'], j.io)).toBe(8);
    expect(JSON.parse(j.stdout())).toEqual(failed);
  });

  it('exits 8 when the VM refuses to start the migration', async () => {
    control.failures.set('migrate', new VmControlError('There\'s a migration process in progress'));
    const t = fakeIo();
    expect(await migrateCommand(['--qmp', qmp, 'tcp:10.0.0.2:4444'], t.io)).toBe(8);
    expect(t.stderr()).toBe('tsvmm: migration failed: There\'s a migration process in progress\n');
  });

  it('cancels on Ctrl-C, waits for the VM to confirm, and exits 10', async () => {
    control.play(active1);
    control.onCancel = () => control.play({ status: 'cancelling' }, { status: 'cancelled' });
    const t = fakeIo();
    const run = migrateCommand(['--qmp', qmp, '--interval', '5', 'tcp:10.0.0.2:4444'], t.io);
    await expect.poll(() => control.callNames().filter((n) => n === 'queryMigrate').length).toBeGreaterThanOrEqual(2);
    t.interrupt();
    expect(await run).toBe(10);
    expect(control.callNames()).toContain('migrateCancel');
    expect(t.stderr()).toMatch(/cancelling the migration/);
    expect(t.stderr()).toMatch(/tsvmm: migration cancelled\n$/);
  });

  it('stops waiting on a second Ctrl-C (exit 130)', async () => {
    control.play(active1); // never confirms the cancel
    const t = fakeIo();
    const run = migrateCommand(['--qmp', qmp, '--interval', '5', 'tcp:10.0.0.2:4444'], t.io);
    await expect.poll(() => control.callNames()).toContain('queryMigrate');
    t.interrupt();
    await expect.poll(() => control.callNames()).toContain('migrateCancel');
    t.interrupt();
    expect(await run).toBe(130);
  });

  it('reports completion when the source closes QMP right after its completed event', async () => {
    control.play(active1, active2);
    const t = fakeIo();
    const run = migrateCommand(['--qmp', qmp, '--interval', '5', 'tcp:10.0.0.2:4444'], t.io);
    await expect.poll(() => control.callNames().filter((n) => n === 'queryMigrate').length).toBeGreaterThanOrEqual(3);
    // What a source tsvmm does on completion: the event, then it exits, closing QMP.
    control.emit({ event: 'MIGRATION', data: { status: 'completed' } });
    await server.close();
    expect(await run).toBe(0);
    expect(t.stdout()).toBe('migration completed: total 900 ms, 2 dirty syncs, sent 1000.00 MiB (0 pages, 0 zero pages)\n');
    expect(t.stderr()).toMatch(/closed QMP right after completing/);
    server = await QmpServer.listen(qmp, control);
  });

  it('exits 12 when the connection is lost mid-migration with no completion seen', async () => {
    control.play(active1);
    const t = fakeIo();
    const run = migrateCommand(['--qmp', qmp, '--interval', '5', 'tcp:10.0.0.2:4444'], t.io);
    await expect.poll(() => control.callNames()).toContain('queryMigrate');
    await server.close();
    expect(await run).toBe(12);
    expect(t.stderr()).toMatch(/QMP connection to unix:.* closed/);
    server = await QmpServer.listen(qmp, control);
  });

  it('exits 12 with a hint when no QMP listens at the address', async () => {
    const t = fakeIo();
    const missing = `unix:${sock.path}.none`;
    expect(await migrateCommand(['--qmp', missing, 'tcp:10.0.0.2:4444'], t.io)).toBe(12);
    expect(t.stderr()).toBe(`tsvmm: cannot connect to QMP at ${missing}: ENOENT, is tsvmm running with --qmp ${missing}?\n`);
  });

  it('prints its help on stdout', async () => {
    const t = fakeIo();
    expect(await migrateCommand(['--help'], t.io)).toBe(0);
    expect(t.stdout()).toMatch(/^Usage: tsvmm migrate --qmp/);
  });

  it.each([
    [[], /missing --qmp/],
    [['--qmp', 'unix:/x'], /missing the destination/],
    [['--qmp', 'unix:/x', 'tcp:a:1', 'tcp:b:2'], /unexpected argument 'tcp:b:2'/],
    [['--qmp', 'stdio', 'tcp:a:1'], /--qmp: 'stdio' is neither unix:PATH nor tcp:HOST:PORT/],
    [['--qmp', 'unix:/x', 'unix:/y'], /destination 'unix:\/y' is not tcp:HOST:PORT/],
    [['--qmp', 'unix:/x', 'tcp:host'], /not tcp:HOST:PORT/],
    [['--qmp', 'unix:/x', '--max-bandwidth', 'fast', 'tcp:a:1'], /--max-bandwidth: cannot parse rate 'fast'/],
    [['--qmp', 'unix:/x', '--downtime-limit', '-5', 'tcp:a:1'], /--downtime-limit/],
    [['--qmp', 'unix:/x', '--peer-timeout', '2s', 'tcp:a:1'], /--peer-timeout: '2s' is not a whole number/],
    [['--qmp', 'unix:/x', '--interval', '0', 'tcp:a:1'], /--interval: '0' is not a whole number of at least 1/],
    [['--qmp', 'unix:/x', '--bogus', 'tcp:a:1'], /Unknown option '--bogus'/],
  ])('refuses bad arguments %j with one line and exit 2', async (argv, message) => {
    const t = fakeIo();
    expect(await migrateCommand(argv, t.io)).toBe(2);
    expect(t.stderr()).toMatch(message);
    expect(t.stderr()).toMatch(/^tsvmm: migrate: [^\n]*\(see 'tsvmm migrate --help'\)\n$/);
    expect(control.calls).toEqual([]);
  });
});

describe('migrate formatting', () => {
  it('parses rates in bytes/s with binary suffixes', () => {
    expect(parseBandwidth('100M')).toBe(100 * MiB);
    expect(parseBandwidth('1.5GiB/s')).toBe(1.5 * GiB);
    expect(parseBandwidth('4096')).toBe(4096);
    expect(parseBandwidth('0')).toBe(0);
    expect(() => parseBandwidth('0.3K')).toThrow(/whole number/);
    expect(() => parseBandwidth('-1M')).toThrow(/cannot parse/);
  });

  it('formats sizes, progress and summaries', () => {
    expect(formatSize(512)).toBe('512 B');
    expect(formatSize(1.5 * GiB, 2)).toBe('1.50 GiB');
    expect(formatProgress({ status: 'device', ram: ram({ 'dirty-sync-count': 4 }) })).toMatch(/^pass 4 .* \(device\)$/);
    expect(formatSummary({ status: 'completed', ram: ram({ 'dirty-sync-count': 1, normal: 1, duplicate: 1 }) }))
      .toBe('migration completed: 1 dirty sync, sent 0 B (1 page, 1 zero page)');
  });
});
