import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient, QmpConnectionError, QmpError, type QmpEvent } from '../../../src/control/qmp-client.js';
import { QmpServer } from '../../../src/control/qmp-server.js';
import { VmControlError } from '../../../src/control/vm-control.js';
import { FakeVmControl, tempSocketPath } from './fake-vm-control.js';

let sock: ReturnType<typeof tempSocketPath>;
let control: FakeVmControl;
let server: QmpServer;
let address: string;
const clients: QmpClient[] = [];

async function connect(options?: { timeoutMs?: number }): Promise<QmpClient> {
  const c = await QmpClient.connect(address, options);
  clients.push(c);
  return c;
}

const open: net.Socket[] = [];
let rogues = 0;

/** A server on a second socket that does whatever `onConnection` does, for misbehaving peers. */
async function rogueServer(onConnection: (s: net.Socket) => void): Promise<{ address: string; close(): Promise<void> }> {
  const path = `${sock.path}.rogue${++rogues}`;
  const s = net.createServer((c) => { c.on('error', () => {}); onConnection(c); });
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(path, resolve); });
  return {
    address: `unix:${path}`,
    close: () => new Promise<void>((r) => { s.close(() => r()); for (const c of open) c.destroy(); }),
  };
}

beforeEach(async () => {
  sock = tempSocketPath();
  control = new FakeVmControl();
  address = `unix:${sock.path}`;
  server = await QmpServer.listen(address, control, { packageVersion: '9.9.9', log: () => {} });
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server.close();
  sock.cleanup();
});

describe('QmpClient', () => {
  it('reads the greeting, negotiates, and runs commands', async () => {
    const c = await connect();
    expect(c.greeting?.version.package).toBe('tsvmm 9.9.9');
    expect(await c.execute('query-status')).toEqual({ running: true, singlestep: false, status: 'running' });
    expect(await c.execute('migrate', { uri: 'tcp:127.0.0.1:4444' })).toEqual({});
    expect(control.calls.at(-1)).toEqual(['migrate', 'tcp:127.0.0.1:4444']);
  });

  it('rejects a refused command with QmpError carrying the QMP class and desc', async () => {
    const c = await connect();
    control.failures.set('cont', new VmControlError('incoming migration in progress', 'DeviceNotActive'));
    const e = await c.execute('cont').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpError);
    expect(e).toMatchObject({ qmpClass: 'DeviceNotActive', desc: 'incoming migration in progress', message: 'cont: incoming migration in progress' });
    await expect(c.execute('no-such')).rejects.toMatchObject({ qmpClass: 'CommandNotFound' });
    // The connection is still good after refusals.
    expect(await c.execute('query-status')).toMatchObject({ status: 'running' });
  });

  it('runs commands issued together and matches each answer to its command', async () => {
    const c = await connect();
    const [a, b, d] = await Promise.all([c.execute('query-status'), c.execute('query-migrate'), c.execute('query-migrate-parameters')]);
    expect(a).toMatchObject({ status: 'running' });
    expect(b).toEqual({});
    expect(d).toMatchObject({ 'downtime-limit': 300 });
  });

  it('delivers events to listeners and to the async iterator', async () => {
    const c = await connect();
    const heard: QmpEvent[] = [];
    c.on('event', (e) => heard.push(e));
    const iterator = c.events();
    const firstTwo = (async () => {
      const got: QmpEvent[] = [];
      for await (const e of iterator) {
        got.push(e);
        if (got.length === 2) break;
      }
      return got;
    })();
    await new Promise((r) => setTimeout(r, 10)); // let the iterator subscribe
    control.emit({ event: 'MIGRATION', data: { status: 'setup' } });
    control.emit({ event: 'STOP' });
    const got = await firstTwo;
    expect(got.map((e) => e.event)).toEqual(['MIGRATION', 'STOP']);
    expect(got[0]).toMatchObject({ data: { status: 'setup' }, timestamp: { seconds: expect.any(Number) } });
    expect(heard.map((e) => e.event)).toEqual(['MIGRATION', 'STOP']);
  });

  it('ends the event iterator when the connection closes', async () => {
    const c = await connect();
    const all = (async () => { const got: string[] = []; for await (const e of c.events()) got.push(e.event); return got; })();
    await new Promise((r) => setTimeout(r, 10));
    control.emit({ event: 'RESUME' });
    await new Promise((r) => setTimeout(r, 10));
    await server.close();
    expect(await all).toEqual(['RESUME']);
    server = await QmpServer.listen(address, control); // for afterEach
  });

  it('says what to check when nothing listens at the address', async () => {
    const missing = `unix:${sock.path}.missing`;
    const e = await QmpClient.connect(missing).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpConnectionError);
    expect(e).toMatchObject({ code: 'CONNECT' });
    expect((e as Error).message).toBe(`cannot connect to QMP at ${missing}: ENOENT, is tsvmm running with --qmp ${missing}?`);
    await expect(QmpClient.connect('tcp:127.0.0.1:1')).rejects.toThrow(/cannot connect to QMP at tcp:127.0.0.1:1: ECONNREFUSED/);
    await expect(QmpClient.connect('tcp:nowhere')).rejects.toThrow(/not tcp:HOST:PORT/);
  });

  it('rejects a command cut off by the connection closing', async () => {
    const c = await connect();
    control.stopGate = new Promise(() => {}); // stop never finishes
    const pending = c.execute('stop');
    await expect.poll(() => control.callNames()).toContain('stop');
    await server.close();
    await expect(pending).rejects.toThrow(`QMP connection to ${address} closed while waiting for the answer to 'stop'`);
    await expect(c.execute('query-status')).rejects.toMatchObject({ code: 'CLOSED' });
    expect(c.closed).toBe(true);
    server = await QmpServer.listen(address, control);
  });

  it('times out a command with no answer, and drops the late answer', async () => {
    const c = await connect({ timeoutMs: 200 });
    let release!: () => void;
    control.stopGate = new Promise((r) => { release = r; });
    await expect(c.execute('stop', undefined, { timeoutMs: 50 })).rejects.toThrow(`no answer from QMP at ${address} to 'stop' within 50 ms`);
    release();
    // The late answer to `stop` must not be taken for this one.
    expect(await c.execute('query-status')).toMatchObject({ status: 'paused' });
  });

  it('refuses a peer that never greets, or is not QMP', async () => {
    const silent = await rogueServer((s) => open.push(s));
    const chatty = await rogueServer((s) => { open.push(s); s.write('{"hello": "world"}\n'); });
    try {
      await expect(QmpClient.connect(silent.address, { timeoutMs: 100 })).rejects.toMatchObject({ code: 'TIMEOUT', message: expect.stringMatching(/sent no greeting within 100 ms/) });
      await expect(QmpClient.connect(chatty.address, { timeoutMs: 1000 })).rejects.toMatchObject({ code: 'PROTOCOL', message: expect.stringMatching(/not a QMP greeting/) });
    } finally {
      await silent.close();
      await chatty.close();
    }
  });

  it('connects over TCP', async () => {
    const tcp = await QmpServer.listen('tcp:127.0.0.1:0', control);
    try {
      const c = await QmpClient.connect(tcp.address);
      clients.push(c);
      expect(c.address).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
      expect(await c.execute('query-migrate')).toEqual({});
    } finally {
      await tcp.close();
    }
  });
});
