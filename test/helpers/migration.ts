// What the migration e2e suites share: starting real tsvmm processes, reaching their QMP sockets, and
// waiting for a migration's outcome the way a QMP user would.
import net from 'node:net';
import { afterEach, expect } from 'vitest';
import { QmpClient } from '../../src/control/qmp-client.js';
import { RECORD_HEADER_BYTES, RecordType } from '../../src/migration/protocol.js';
import { guest } from './paths.js';
import { TsvmmProcess, migrationPort } from './tsvmm-process.js';

export const DIRTIER = guest('dirtier');
/**
 * What the dirtier says after its first pass. Wait for it, not for its start-up line, before
 * migrating: until then its ring-0 set-up may still be running (emulated, on kvm_pvm, while the VMM
 * runs natively) with nothing stamped, and a migration of untouched RAM completes before it starts.
 */
export const DIRTYING = /dirtier: dirtying\n/;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The processes a suite started; every one is killed after each test, whatever its outcome. */
export function processPool(): (args: string[], name: string, env?: Record<string, string>, prefix?: readonly string[]) => TsvmmProcess {
  const running: TsvmmProcess[] = [];
  afterEach(() => { running.splice(0).forEach((p) => p.kill()); });
  return (args, name, env = {}, prefix = []) => {
    const p = new TsvmmProcess(args, name, env, prefix);
    running.push(p);
    return p;
  };
}

export async function qmp(p: TsvmmProcess): Promise<QmpClient> {
  await p.waitForQmp();
  return QmpClient.connect(`unix:${p.qmpPath}`);
}

/** Starts a destination on a fresh loopback port and waits until it listens. */
export async function destination(start: ReturnType<typeof processPool>, args: string[], name = 'dst', host = '127.0.0.1', prefix: readonly string[] = []): Promise<{ dst: TsvmmProcess; uri: string }> {
  const uri = `tcp:${host}:${await migrationPort()}`;
  const dst = start([...args, '--incoming', uri], name, {}, prefix);
  await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), `${name} to listen`);
  return { dst, uri };
}

/**
 * Polls query-migrate until the migration ends. A completed source exits soon after, so the QMP
 * socket may close before the last poll: the MIGRATION event then tells the outcome.
 */
export async function migrationEnd(client: QmpClient, onPoll?: (info: Record<string, any>) => void): Promise<Record<string, any>> {
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
    onPoll?.(last);
    await sleep(50);
  }
}

/**
 * Migrates `src` to `uri` with verify on (both sides hash RAM at the switch-over) and asserts that it
 * completes and that the source then exits with status 0; `label` names the migration in failures.
 */
export async function migrateVerified(src: TsvmmProcess, uri: string, label?: string): Promise<Record<string, any>> {
  const client = await qmp(src);
  await client.execute('migrate-set-parameters', { 'x-verify': true });
  await client.execute('migrate', { uri });
  const info = await migrationEnd(client);
  expect(info.status, `${label === undefined ? '' : `${label}: `}${info['error-desc']}`).toBe('completed');
  expect(await src.exited, label).toBe(0);
  return info;
}

/** Polls query-migrate until `until` holds for it (the migration still under way). */
export async function migrationWhere(client: QmpClient, until: (info: Record<string, any>) => boolean, label: string, timeoutMs = 120_000): Promise<Record<string, any>> {
  const t0 = Date.now();
  for (;;) {
    const info = (await client.execute('query-migrate')) as Record<string, any>;
    if (until(info)) return info;
    if (['completed', 'failed', 'cancelled'].includes(info.status)) throw new Error(`the migration ended (${info.status}: ${info['error-desc'] ?? ''}) before ${label}`);
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${label}; last query-migrate: ${JSON.stringify(info)}`);
    await sleep(50);
  }
}

/**
 * Brings a migration from a fresh 32 MiB source (the dirtier, stamped once, then holding) to `dst` at
 * `uri` into its switch-over with `dst` frozen (SIGSTOP; SIGCONT it when done). With pass 1's last
 * record still to go (max-bandwidth 4 MiB/s makes that last a while), the destination stops: its
 * kernel still takes and acknowledges the last pages, so no timeout ends the connection, and the
 * source, having waited in vain for it to say it applied them (catch-up), stops its guest and waits
 * for LOADED. Returns the source, its QMP client, and its events so far (`MIGRATION <status>` or the
 * event's name), which go on being collected.
 */
export async function switchOverToFrozenDestination(
  start: ReturnType<typeof processPool>, dst: TsvmmProcess, uri: string,
  { parameters = {}, name = 'src', prefix = [] }: { parameters?: Record<string, unknown>; name?: string; prefix?: readonly string[] } = {},
): Promise<{ src: TsvmmProcess; client: QmpClient; events: string[] }> {
  const MiB = 2 ** 20;
  const src = start([DIRTIER, '--mem', '32M', '--cmdline', 'start=0x1000000 span=1 hold=1'], name, {}, prefix);
  await src.waitForConsole(/dirtier: holding\n/);
  const client = await qmp(src);
  const events: string[] = [];
  client.on('event', (e) => events.push(e.event === 'MIGRATION' ? `MIGRATION ${(e.data as { status: string }).status}` : e.event));
  await client.execute('migrate-set-parameters', { 'max-bandwidth': 4 * MiB, ...parameters });
  await client.execute('migrate', { uri });
  await migrationWhere(client, (i) => i.ram?.['dirty-sync-count'] === 1 && i.ram.remaining > 0 && i.ram.remaining <= 3.5 * MiB, "pass 1's last record");
  dst.kill('SIGSTOP');
  await migrationWhere(client, (i) => i.status === 'device', 'the switch-over');
  return { src, client, events };
}

/** The guest checks every stamp it has written; resolves with the verify line it printed. */
export async function guestVerifies(p: TsvmmProcess): Promise<string> {
  const before = p.console().length;
  p.type('v');
  await p.waitFor(() => /dirtier: verify (ok|FAILED)[^\n]*\n/.test(p.console().slice(before)), 'the guest to verify itself', 180_000);
  return /dirtier: verify (ok|FAILED)[^\n]*/.exec(p.console().slice(before))![0];
}

/**
 * A TCP relay between a source and a destination that passes everything until the destination answers
 * LOADED, and then, instead of passing that on, cuts both connections: the network dying at the worst
 * moment, when the destination has everything and the source does not know it. Reads the answers'
 * record framing (u8 type, u32 length, payload).
 */
export async function loadedCuttingRelay(target: { host: string; port: number }): Promise<{ uri: string; cut: () => boolean; close: () => void }> {
  let cut = false;
  const server = net.createServer((from) => {
    const to = net.connect(target);
    const cutBoth = () => { from.destroy(); to.destroy(); };
    let answers = Buffer.alloc(0);
    from.on('data', (chunk: Buffer) => to.write(chunk));
    to.on('data', (chunk: Buffer) => {
      answers = Buffer.concat([answers, chunk]);
      while (answers.length >= RECORD_HEADER_BYTES) {
        const length = RECORD_HEADER_BYTES + answers.readUInt32LE(1);
        if (answers.length < length) return;
        if (answers[0] === RecordType.LOADED) {
          cut = true;
          cutBoth();
          return;
        }
        from.write(answers.subarray(0, length));
        answers = answers.subarray(length);
      }
    });
    from.on('error', cutBoth);
    to.on('error', cutBoth);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { uri: `tcp:127.0.0.1:${port}`, cut: () => cut, close: () => server.close() };
}

/**
 * A TCP relay between a source and a destination that passes the first `limitBytes` bytes of the
 * stream and then cuts both connections: a truncated stream, as a network that dies mid-migration makes.
 */
export async function truncatingRelay(target: { host: string; port: number }, limitBytes: number): Promise<{ uri: string; passed: () => number; close: () => void }> {
  let passed = 0;
  const server = net.createServer((from) => {
    const to = net.connect(target);
    const cut = () => { from.destroy(); to.destroy(); };
    from.on('data', (chunk: Buffer) => {
      const room = limitBytes - passed;
      if (room <= 0) return cut();
      to.write(chunk.subarray(0, room));
      passed += Math.min(room, chunk.length);
      if (passed >= limitBytes) to.end(() => from.destroy());
    });
    to.on('data', (chunk) => from.write(chunk));
    from.on('error', cut);
    to.on('error', cut);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { uri: `tcp:127.0.0.1:${port}`, passed: () => passed, close: () => server.close() };
}
