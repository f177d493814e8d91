import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QMP_COMMANDS } from '../../../src/control/qmp-commands.js';
import { QmpListenError, QmpServer } from '../../../src/control/qmp-server.js';
import { VmControlError } from '../../../src/control/vm-control.js';
import { FakeVmControl, RawClient, ram, tempSocketPath } from './fake-vm-control.js';

const packageVersion = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

let sock: ReturnType<typeof tempSocketPath>;
let control: FakeVmControl;
let server: QmpServer;
const clients: RawClient[] = [];

async function client(negotiate = true): Promise<RawClient> {
  const c = negotiate ? await RawClient.negotiated(sock.path) : await RawClient.connect(sock.path);
  clients.push(c);
  return c;
}

beforeEach(async () => {
  sock = tempSocketPath();
  control = new FakeVmControl();
  server = await QmpServer.listen(`unix:${sock.path}`, control, { log: () => {} });
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server.close();
  sock.cleanup();
});

describe('QmpServer: greeting and negotiation', () => {
  it('greets with a QEMU-shaped version and no capabilities', async () => {
    const c = await client(false);
    expect(await c.next()).toEqual({
      QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 }, package: `tsvmm ${packageVersion}` }, capabilities: [] },
    });
  });

  it('refuses every command, known or not, until qmp_capabilities', async () => {
    const c = await client(false);
    await c.next();
    const expecting = { error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" } };
    expect(await c.command('query-status')).toEqual(expecting);
    expect(await c.command('no-such-command')).toEqual(expecting);
    expect(control.calls).toEqual([]);
    expect(await c.command('qmp_capabilities')).toEqual({ return: {} });
    expect(await c.command('query-status')).toEqual({ return: { running: true, singlestep: false, status: 'running' } });
  });

  it('refuses a second negotiation and capabilities it did not offer', async () => {
    const fresh = await client(false);
    await fresh.next();
    expect(await fresh.command('qmp_capabilities', { enable: ['oob'] })).toEqual({ error: { class: 'GenericError', desc: "Capability 'oob' not available" } });
    const c = await client();
    expect(await c.command('qmp_capabilities')).toEqual({
      error: { class: 'CommandNotFound', desc: 'Capabilities negotiation is already complete, command ignored' },
    });
  });
});

describe('QmpServer: commands map to VmControl', () => {
  it('query-status reports the run state', async () => {
    const c = await client();
    control.state = 'paused';
    expect(await c.command('query-status')).toEqual({ return: { running: false, singlestep: false, status: 'paused' } });
  });

  it('stop, cont and migrate_cancel call through and return {}', async () => {
    const c = await client();
    expect(await c.command('stop')).toEqual({ return: {} });
    expect(await c.command('cont')).toEqual({ return: {} });
    expect(await c.command('migrate_cancel')).toEqual({ return: {} });
    expect(control.callNames()).toEqual(['stop', 'cont', 'migrateCancel']);
  });

  it('migrate passes the uri, takes QEMU\'s detach, and blk/inc/resume only when false', async () => {
    const c = await client();
    expect(await c.command('migrate', { uri: 'tcp:10.0.0.2:4444', blk: false, inc: false, detach: true, resume: false })).toEqual({ return: {} });
    for (const asked of [{ blk: true }, { inc: true }]) {
      expect(await c.command('migrate', { uri: 'tcp:10.0.0.2:4444', ...asked })).toEqual({
        error: { class: 'GenericError', desc: expect.stringMatching(/no block migration \('blk', 'inc'\).*same disk images/) },
      });
    }
    expect(await c.command('migrate', { uri: 'tcp:10.0.0.2:4444', resume: true })).toEqual({
      error: { class: 'GenericError', desc: expect.stringMatching(/no postcopy recovery \('resume'\)/) },
    });
    expect(await c.command('migrate-incoming', { uri: 'tcp:0.0.0.0:4444' })).toEqual({ return: {} });
    expect(control.calls).toEqual([['migrate', 'tcp:10.0.0.2:4444'], ['migrateIncoming', 'tcp:0.0.0.0:4444']]);
  });

  it('query-migrate returns the MigrationInfo unchanged', async () => {
    const info = { status: 'active' as const, ram: ram({ transferred: 1234 }), 'total-time': 50, 'expected-downtime': 12 };
    control.play(info);
    const c = await client();
    expect(await c.command('query-migrate')).toEqual({ return: info });
  });

  it('migration capabilities and parameters are set and queried', async () => {
    const c = await client();
    expect(await c.command('migrate-set-capabilities', { capabilities: [{ capability: 'auto-converge', state: true }] })).toEqual({ return: {} });
    expect(control.calls.at(-1)).toEqual(['setMigrationCapabilities', [{ capability: 'auto-converge', state: true }]]);
    expect(await c.command('query-migrate-capabilities')).toEqual({
      return: [{ capability: 'auto-converge', state: true }, { capability: 'multifd', state: true }],
    });
    expect(await c.command('migrate-set-parameters', { 'downtime-limit': 50, 'x-verify': true })).toEqual({ return: {} });
    expect(control.calls.at(-1)).toEqual(['setMigrationParameters', { 'downtime-limit': 50, 'x-verify': true }]);
    expect(await c.command('query-migrate-parameters')).toEqual({
      return: { 'downtime-limit': 50, 'max-bandwidth': 0, 'multifd-channels': 2, 'x-verify': true },
    });
  });

  it('query-commands lists every command, query-version the greeting\'s version', async () => {
    const c = await client();
    const listed = ((await c.command('query-commands')).return as { name: string }[]).map((x) => x.name);
    expect(listed.sort()).toEqual([...QMP_COMMANDS].sort());
    expect(listed).toEqual(expect.arrayContaining(['qmp_capabilities', 'migrate', 'query-migrate', 'migrate_cancel', 'quit']));
    expect(await c.command('query-version')).toEqual({ return: { qemu: { micro: 0, minor: 2, major: 7 }, package: `tsvmm ${packageVersion}` } });
  });

  it('quit answers before it quits', async () => {
    const c = await client();
    expect(await c.command('quit')).toEqual({ return: {} });
    await expect.poll(() => control.callNames()).toEqual(['quit']);
  });

  it('echoes the id of any JSON type, on answers and on errors', async () => {
    const c = await client();
    c.send({ execute: 'cont', id: 'abc' });
    expect(await c.next()).toEqual({ return: {}, id: 'abc' });
    c.send({ execute: 'nope', id: { n: [1, 2] } });
    expect(await c.next()).toEqual({ error: { class: 'CommandNotFound', desc: 'The command nope has not been found' }, id: { n: [1, 2] } });
    c.send({ execute: 'migrate', id: 7 });
    expect(await c.next()).toMatchObject({ id: 7, error: { class: 'GenericError' } });
  });
});

describe('QmpServer: bad input is answered, never fatal', () => {
  it('answers malformed JSON with a parse error and keeps the connection', async () => {
    const c = await client();
    c.send('{"execute": "query-status",,}\n');
    const e = await c.next();
    expect(e).toMatchObject({ error: { class: 'GenericError' } });
    expect((e.error as { desc: string }).desc).toMatch(/^JSON parse error, /);
    expect(await c.command('query-status')).toMatchObject({ return: { status: 'running' } });
  });

  it('reports requests that are not command objects as QEMU does', async () => {
    const c = await client();
    const desc = async (text: string) => { c.send(text); return ((await c.next()).error as { desc: string }).desc; };
    expect(await desc('[1, 2]\n')).toBe('QMP input must be a JSON object');
    expect(await desc('42\n')).toBe('QMP input must be a JSON object');
    expect(await desc('{"arguments": {}}')).toBe("QMP input lacks member 'execute'");
    expect(await desc('{"execute": 5}')).toBe("QMP input member 'execute' must be a string");
    expect(await desc('{"execute": "stop", "arguments": []}')).toBe("QMP input member 'arguments' must be an object");
    expect(await desc('{"execute": "stop", "extra": 1}')).toBe("QMP input member 'extra' is unexpected");
    expect(control.calls).toEqual([]);
  });

  it('answers an unknown command with CommandNotFound, even one named like an Object property', async () => {
    const c = await client();
    expect(await c.command('frobnicate')).toEqual({ error: { class: 'CommandNotFound', desc: 'The command frobnicate has not been found' } });
    expect(await c.command('constructor')).toMatchObject({ error: { class: 'CommandNotFound' } });
    expect(await c.command('__proto__')).toMatchObject({ error: { class: 'CommandNotFound' } });
  });

  it('names the missing, unexpected or mistyped parameter', async () => {
    const c = await client();
    const err = (desc: string) => ({ error: { class: 'GenericError', desc } });
    expect(await c.command('migrate', {})).toEqual(err("Parameter 'uri' is missing"));
    expect(await c.command('migrate', { uri: 5 })).toEqual(err("Invalid parameter type for 'uri', expected: string"));
    expect(await c.command('migrate', { uri: 'tcp:a:1', foo: 1 })).toEqual(err("Parameter 'foo' is unexpected"));
    expect(await c.command('migrate', { uri: 'tcp:a:1', detach: 'yes' })).toEqual(err("Invalid parameter type for 'detach', expected: boolean"));
    expect(await c.command('stop', { now: true })).toEqual(err("Parameter 'now' is unexpected"));
    expect(await c.command('migrate-set-parameters', { 'downtime-limit': -1 })).toEqual(err("Invalid parameter type for 'downtime-limit', expected: uint64"));
    expect(await c.command('migrate-set-parameters', { 'max-bandwidth': 1.5 })).toEqual(err("Invalid parameter type for 'max-bandwidth', expected: uint64"));
    expect(await c.command('migrate-set-parameters', { 'cpu-throttle-initial': 20 })).toEqual(err("Parameter 'cpu-throttle-initial' is unexpected"));
    expect(await c.command('migrate-set-capabilities', { capabilities: {} })).toEqual(err("Invalid parameter type for 'capabilities', expected: array"));
    expect(await c.command('migrate-set-capabilities', { capabilities: [7] })).toEqual(err("Invalid parameter type for 'capabilities[0]', expected: object"));
    expect(await c.command('migrate-set-capabilities', { capabilities: [{ capability: 'multifd' }] })).toEqual(err("Parameter 'capabilities[0].state' is missing"));
    expect(control.calls).toEqual([]);
  });

  it('passes a VmControlError\'s class and message through; other errors become GenericError', async () => {
    const c = await client();
    control.failures.set('cont', new VmControlError('migration in progress', 'DeviceNotActive'));
    expect(await c.command('cont')).toEqual({ error: { class: 'DeviceNotActive', desc: 'migration in progress' } });
    control.failures.set('stop', new Error('vCPU 1 did not pause'));
    expect(await c.command('stop')).toEqual({ error: { class: 'GenericError', desc: 'vCPU 1 did not pause' } });
    expect(await c.command('migrate-set-capabilities', { capabilities: [{ capability: 'zero-blocks', state: true }] })).toEqual({
      error: { class: 'GenericError', desc: "Invalid parameter 'capability': unknown capability 'zero-blocks'" },
    });
  });

  it('splits concatenated commands in one write, and a command split across many writes', async () => {
    const c = await client();
    c.send('{"execute":"stop","id":1}{"execute":"cont","id":2}  {"execute":"query-status","id":3}');
    expect([await c.next(), await c.next(), await c.next()].map((m) => m.id)).toEqual([1, 2, 3]);
    expect(control.callNames()).toEqual(['stop', 'cont', 'runState']);
    const text = '{"execute": "query-migrate", "id": "a}\\"b{"}\n';
    for (const ch of text) c.send(ch);
    expect(await c.next()).toEqual({ return: {}, id: 'a}"b{' });
  });

  it('answers in order even when an earlier command is slow', async () => {
    const c = await client();
    let release!: () => void;
    control.stopGate = new Promise((r) => { release = r; });
    c.send('{"execute":"stop","id":1}{"execute":"query-status","id":2}');
    await new Promise((r) => setTimeout(r, 20));
    expect(c.pending()).toBe(0);
    release();
    expect(await c.next()).toEqual({ return: {}, id: 1 });
    expect(await c.next()).toEqual({ return: { running: false, singlestep: false, status: 'paused' }, id: 2 });
  });

  it('stops reading from a client flooding commands behind a slow one, and answers them all after', async () => {
    const c = await client();
    let release!: () => void;
    control.stopGate = new Promise((r) => { release = r; });
    c.send({ execute: 'stop', id: 0 });
    let flood = '';
    for (let i = 1; i <= 300; i++) flood += JSON.stringify({ execute: 'query-status', id: i });
    c.send(flood);
    await new Promise((r) => setTimeout(r, 20));
    release();
    for (let i = 0; i <= 300; i++) expect((await c.next()).id).toBe(i);
  });

  it('resynchronises after a string broken by a newline', async () => {
    const c = await client();
    c.send('{"execute": "stop\n{"execute": "cont", "id": "ok"}\n');
    expect(await c.next()).toMatchObject({ error: { class: 'GenericError' } });
    expect(await c.next()).toEqual({ return: {}, id: 'ok' });
    expect(control.callNames()).toEqual(['cont']);
  });

  it('disconnects a client sending an oversized or too deeply nested value, and keeps serving others', async () => {
    const big = await client();
    const deep = await client();
    const bystander = await client();
    big.send(`{"execute": "stop", "arguments": {"x": "${'a'.repeat(1100 * 1024)}`);
    expect(await big.next()).toMatchObject({ error: { class: 'GenericError' } });
    await big.closed();
    deep.send('['.repeat(2000));
    expect((await deep.next()).error).toMatchObject({ desc: expect.stringMatching(/nesting/) });
    await deep.closed();
    expect(await bystander.command('query-status')).toMatchObject({ return: { status: 'running' } });
  });

  it('survives random garbage and answers the next client', async () => {
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const alphabet = '{}[]":,\\ \nabc01-.eE\u00e9\ud83d';
    for (let round = 0; round < 20; round++) {
      const c = await client(round % 2 === 0);
      let junk = '';
      for (let i = 0; i < 2000; i++) junk += alphabet[Math.floor(rand() * alphabet.length)];
      c.send(junk);
      c.socket.write(Buffer.from(Array.from({ length: 500 }, () => Math.floor(rand() * 256))));
    }
    await new Promise((r) => setTimeout(r, 50)); // let the server chew through it all
    const c = await client();
    expect(await c.command('query-status')).toMatchObject({ return: { status: 'running' } });
  });

  it('survives a client that vanishes while its command runs', async () => {
    const c = await client();
    let release!: () => void;
    control.stopGate = new Promise((r) => { release = r; });
    c.send({ execute: 'stop' });
    await expect.poll(() => control.callNames()).toEqual(['stop']);
    c.close();
    await new Promise((r) => setTimeout(r, 20));
    release();
    const other = await client();
    expect(await other.command('query-status')).toMatchObject({ return: { status: 'paused' } });
  });
});

describe('QmpServer: events', () => {
  it('pushes events with a timestamp to every negotiated client, and only to those', async () => {
    const a = await client();
    const b = await client();
    const unnegotiated = await client(false);
    await unnegotiated.next();
    const before = Date.now() / 1000;
    control.emit({ event: 'MIGRATION', data: { status: 'active' } });
    control.emit({ event: 'STOP' });
    for (const c of [a, b]) {
      const m = await c.next();
      expect(m).toMatchObject({ event: 'MIGRATION', data: { status: 'active' } });
      const ts = m.timestamp as { seconds: number; microseconds: number };
      expect(Number.isInteger(ts.seconds) && Number.isInteger(ts.microseconds)).toBe(true);
      expect(ts.microseconds).toBeLessThan(1e6);
      expect(Math.abs(ts.seconds + ts.microseconds / 1e6 - before)).toBeLessThan(5);
      // QEMU leaves "data" out of events that have none.
      expect(Object.keys(await c.next()).sort()).toEqual(['event', 'timestamp']);
    }
    await new Promise((r) => setTimeout(r, 20));
    expect(unnegotiated.pending()).toBe(0);
  });

  it('stamps an event with the moment it was raised, however late the line is written', async () => {
    // Lines go out on the next turn of the event loop: after a switch-over's synchronous work, whose
    // STOP must still say when the guest stopped (bench/migrate's guest-stopped figure reads it).
    const c = await client();
    const raised = Date.now();
    control.emit({ event: 'STOP' });
    while (Date.now() - raised < 50); // the switch-over's synchronous work
    const m = await c.next();
    const ts = m.timestamp as { seconds: number; microseconds: number };
    const at = ts.seconds * 1000 + ts.microseconds / 1000;
    expect(at - raised).toBeGreaterThanOrEqual(-1);
    expect(at - raised).toBeLessThan(40);
  });

  it('stamps an event raised with the moment it happened (at) with that moment', async () => {
    // A destination's RESUME: the vCPUs were let go, then handed the CPU, then the event raised.
    const c = await client();
    const happened = performance.timeOrigin + performance.now() - 3.25;
    control.emit({ event: 'RESUME', at: happened });
    const m = await c.next();
    expect(m).toMatchObject({ event: 'RESUME' });
    const ts = m.timestamp as { seconds: number; microseconds: number };
    expect(ts.seconds * 1e6 + ts.microseconds).toBe(Math.floor(happened * 1000));
    expect(Object.keys(m).sort()).toEqual(['event', 'timestamp']);
  });

  it('keeps an event raised inside a command before that command\'s answer, as QEMU writes them', async () => {
    const c = await client();
    control.onCancel = () => control.emit({ event: 'MIGRATION', data: { status: 'cancelling' } });
    c.send({ execute: 'migrate_cancel', id: 7 });
    expect(await c.next()).toMatchObject({ event: 'MIGRATION', data: { status: 'cancelling' } });
    expect(await c.next()).toEqual({ return: {}, id: 7 });
  });

  it('serves two clients at once, each with its own negotiation', async () => {
    const a = await client();
    const b = await client(false);
    await b.next();
    expect(await a.command('query-status')).toMatchObject({ return: { status: 'running' } });
    expect(await b.command('query-status')).toMatchObject({ error: { class: 'CommandNotFound' } });
    expect(await b.command('qmp_capabilities')).toEqual({ return: {} });
    expect(await b.command('stop')).toEqual({ return: {} });
    expect(await a.command('query-status')).toMatchObject({ return: { status: 'paused' } });
  });
});

describe('QmpServer: listening and closing', () => {
  it('close() drops clients, unsubscribes from events and removes the socket file', async () => {
    const c = await client();
    expect(control.listenerCount()).toBe(1);
    await server.close();
    await c.closed();
    expect(control.listenerCount()).toBe(0);
    expect(existsSync(sock.path)).toBe(false);
    await server.close(); // a second close is harmless
    server = await QmpServer.listen(`unix:${sock.path}`, control); // for afterEach
  });

  it('close() still delivers what was written just before it', async () => {
    const c = await client();
    control.emit({ event: 'MIGRATION', data: { status: 'completed' } });
    await server.close();
    expect(await c.next()).toMatchObject({ event: 'MIGRATION', data: { status: 'completed' } });
    await c.closed();
    server = await QmpServer.listen(`unix:${sock.path}`, control);
  });

  it('close({graceMs}) keeps serving connected clients until they hang up, or the grace ends', async () => {
    const leaving = await client();
    const started = Date.now();
    const closing = server.close({ graceMs: 5000 });
    expect(await leaving.command('query-migrate')).toEqual({ return: {} });
    leaving.close();
    await closing;
    expect(Date.now() - started).toBeLessThan(2000);

    server = await QmpServer.listen(`unix:${sock.path}`, control);
    const lingering = await client();
    const t0 = Date.now();
    await server.close({ graceMs: 100 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    await lingering.closed();
    server = await QmpServer.listen(`unix:${sock.path}`, control);
  });

  it('takes over a stale socket file but never a live socket or a regular file', async () => {
    await expect(QmpServer.listen(`unix:${sock.path}`, control)).rejects.toThrow(/cannot listen for QMP on unix:.*EADDRINUSE/);
    const stale = tempSocketPath();
    try {
      // A socket file left behind by a process killed with SIGKILL, which had no chance to unlink it.
      const orphan = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale.path)}, () => console.log('up'))`]);
      await new Promise((r) => orphan.stdout.once('data', r));
      orphan.kill('SIGKILL');
      await new Promise((r) => orphan.once('exit', r));
      expect(existsSync(stale.path)).toBe(true);
      const s2 = await QmpServer.listen(`unix:${stale.path}`, control);
      await s2.close();
      writeFileSync(stale.path, 'precious');
      const e = await QmpServer.listen(`unix:${stale.path}`, control).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(QmpListenError);
      expect(readFileSync(stale.path, 'utf8')).toBe('precious');
    } finally {
      stale.cleanup();
    }
  });

  it('listens on TCP, with port 0 resolved to the real port', async () => {
    const tcp = await QmpServer.listen('tcp:127.0.0.1:0', control);
    try {
      expect(tcp.address).toMatchObject({ kind: 'tcp', host: '127.0.0.1' });
      const port = (tcp.address as { port: number }).port;
      expect(port).toBeGreaterThan(0);
      const greeting = await new Promise<string>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.setEncoding('utf8');
        s.once('data', (d: string) => { s.destroy(); resolve(d); });
      });
      expect(JSON.parse(greeting)).toHaveProperty('QMP');
    } finally {
      await tcp.close();
    }
  });
});
