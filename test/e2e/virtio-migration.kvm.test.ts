// Live migration of guests whose virtio devices are busy: requests in flight at the final pause
// complete on the source, those still in the avail rings on the destination, each exactly once.
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { QmpClient } from '../../src/control/qmp-client.js';
import { checkDiskStamps } from '../helpers/diskcheck-stamps.js';
import { parseEchoPayload, udpFrame, type ParsedFrame } from '../helpers/ethernet-frames.js';
import { EthernetPeer, freeUdpPorts } from '../helpers/ethernet-peer.js';
import { describeKvm } from '../helpers/kvm.js';
import { guest } from '../helpers/paths.js';
import { TsvmmProcess, migrationPort } from '../helpers/tsvmm-process.js';

const MEM = '64M';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const running: TsvmmProcess[] = [];
const closers: (() => void)[] = [];
afterEach(() => {
  running.splice(0).forEach((p) => p.kill());
  closers.splice(0).forEach((c) => c());
});

function start(args: string[], name: string): TsvmmProcess {
  const p = new TsvmmProcess(args, name);
  running.push(p);
  return p;
}

/** Migrates `src` to `port` over QMP and resolves when the source reports completion. */
async function migrate(src: TsvmmProcess, port: number): Promise<void> {
  await src.waitForQmp();
  const client = await QmpClient.connect(`unix:${src.qmpPath}`);
  let completed = false;
  client.on('event', (e) => { if (e.event === 'MIGRATION' && (e.data as { status: string }).status === 'completed') completed = true; });
  await client.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
  for (;;) {
    let status: string;
    try {
      status = ((await client.execute('query-migrate')) as { status: string }).status;
    } catch (e) {
      if (completed) return;
      throw e;
    }
    if (status === 'completed') return;
    if (status === 'failed' || status === 'cancelled') throw new Error(`migration ${status}`);
    await sleep(50);
  }
}

/**
 * The link between the test's Ethernet peer and whichever VM runs the guest: frames from the peer go
 * to the current VM's udp port, frames from any VM go to the peer. The switch-over re-points it, as a
 * network would learn the guest's new location.
 */
class Relay {
  vmPort = 0;
  private constructor(private readonly socket: Socket, private readonly peerPort: number) {
    socket.on('message', (m, from) => {
      if (from.port === peerPort) socket.send(m, this.vmPort, '127.0.0.1');
      else socket.send(m, peerPort, '127.0.0.1');
    });
  }

  static async open(port: number, peerPort: number): Promise<Relay> {
    const s = createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(port, '127.0.0.1', () => resolve()));
    return new Relay(s, peerPort);
  }

  close(): void {
    this.socket.close();
  }
}

describeKvm('migration with virtio I/O in flight', () => {
  it('diskcheck keeps writing and verifying across the migration; it passes on the destination and the host finds its stamps', async () => {
    const disk = path.join(mkdtempSync(path.join(tmpdir(), 'tsvmm-mig-blk-')), 'disk.img');
    writeFileSync(disk, Buffer.alloc(1 << 20));
    const port = await migrationPort();
    // Both sides open the same image: shared storage, as a QEMU migration without block copy assumes.
    const dst = start([guest('diskcheck'), '--mem', MEM, '--disk', disk, '--incoming', `tcp:127.0.0.1:${port}`], 'dst');
    await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), 'the destination to listen');
    const src = start([guest('diskcheck'), '--mem', MEM, '--disk', disk, '--cmdline', 'run=7 passes=0 req=4K depth=8'], 'src');
    await src.waitForConsole(/diskcheck: pass 1: /, 120_000);
    await migrate(src, port); // in the middle of pass 2 or later
    expect(await src.exited).toBe(0);
    dst.type('q'); // ends the run after the current pass
    expect(await dst.exited).toBe(33);
    const out = src.console() + dst.console();
    expect(out).not.toMatch(/bad [1-9]|errors|FAIL/);
    const passes = [...out.matchAll(/diskcheck: pass (\d+): wrote 2048 sectors, flushed, read 2048, ok 2048, bad 0\n/g)].map((m) => Number(m[1]));
    expect(passes.length).toBeGreaterThanOrEqual(2);
    expect(passes).toEqual(Array.from({ length: passes.length }, (_, i) => i + 1));
    expect(dst.console()).toMatch(/diskcheck: PASS\n$/);
    expect(checkDiskStamps(readFileSync(disk), 7, passes.at(-1)!)).toEqual({ ok: 2048, bad: 0, firstBad: [] });
  }, 600_000);

  it('netecho answers a client throughout the migration: every counter once, in order, none skipped', async () => {
    // Every port of the link picked at once, the peer's too: one picked alone could be another's.
    const [relayPort, srcPort, dstPort, peerPort] = await freeUdpPorts(4);
    const peer = await EthernetPeer.open({ remotePort: relayPort, localPort: peerPort });
    closers.push(() => peer.close());
    const relay = await Relay.open(relayPort, peer.port);
    closers.push(() => relay.close());
    const port = await migrationPort();
    const net = (local: number) => ['--net', `udp,local=127.0.0.1:${local},remote=127.0.0.1:${relayPort}`];
    const dst = start([guest('netecho'), '--mem', MEM, ...net(dstPort), '--incoming', `tcp:127.0.0.1:${port}`], 'dst');
    await dst.waitFor(() => dst.stderr.includes('waiting for an incoming migration'), 'the destination to listen');
    const src = start([guest('netecho'), '--mem', MEM, ...net(srcPort)], 'src');
    relay.vmPort = srcPort;
    await src.waitForConsole(/netecho: ready\n/, 120_000);
    const mac = await peer.resolve('10.0.2.15');

    // One request at a time, resent after a silence: a request the source dropped at the switch-over
    // is answered later, and every reply is recorded in arrival order.
    const counters: bigint[] = [];
    const isReply = (f: ParsedFrame): f is Extract<ParsedFrame, { kind: 'udp' }> => f.kind === 'udp' && f.srcPort === 7 && f.dstPort === 40_000;
    let migrated = false;
    let afterMigration = 0;
    let seq = 0;
    const client = (async () => {
      while (!migrated || afterMigration < 200) {
        const payload = Buffer.alloc(16);
        payload.writeUInt32LE(seq, 0);
        const frame = udpFrame({ srcMac: peer.mac, dstMac: mac, srcIp: peer.ip, dstIp: '10.0.2.15', ident: seq, srcPort: 40_000, dstPort: 7, payload });
        for (;;) {
          peer.send(frame);
          const r = await peer.receive(isReply, 1000);
          if (r === null) continue;
          const { counter, echoed } = parseEchoPayload(r.payload);
          counters.push(counter);
          if (echoed.readUInt32LE(0) === seq) break;
        }
        seq++;
        if (migrated) afterMigration++;
      }
    })();
    await sleep(1000);
    const migration = migrate(src, port);
    await migration;
    relay.vmPort = dstPort;
    migrated = true;
    await client;
    await sleep(1500); // late replies to resent requests
    for (let f = await peer.receive(isReply, 10); f !== null; f = await peer.receive(isReply, 10)) counters.push(parseEchoPayload(f.payload).counter);

    expect(counters.length).toBeGreaterThan(200);
    expect(counters).toEqual(Array.from({ length: counters.length }, (_, i) => BigInt(i + 1)));
    expect(await src.exited).toBe(0);
    dst.type('q');
    expect(await dst.exited).toBe(33);
    expect(dst.console()).toMatch(new RegExp(`netecho: quit: udp ${counters.length}, `));
  }, 600_000);
});
