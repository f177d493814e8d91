import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ConsoleProcess } from '../helpers/console-process.js';
import { checkDiskStamps, SECTOR } from '../helpers/diskcheck-stamps.js';
import { EthernetPeer, freeUdpPorts } from '../helpers/ethernet-peer.js';
import { macToString } from '../helpers/ethernet-frames.js';
import { guest } from '../helpers/paths.js';
import { qemuAvailable, qemuDisk, qemuUdpNet, startQemuMicrovm, VIRTIO_MODERN } from '../helpers/qemu-microvm.js';

if (!qemuAvailable) process.stderr.write('\n*** SKIPPING virtio-guests-under-qemu: qemu-system-x86_64 is not installed (apt install qemu-system-x86) ***\n\n');

// QEMU 7.2 microvm is the reference both our virtio devices and our guest drivers are checked against:
// these runs prove diskcheck and netecho against QEMU's devices, under TCG (no /dev/kvm needed).
(qemuAvailable ? describe : describe.skip)('virtio guests under QEMU microvm', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-virtio-qemu-'));
  const running: ConsoleProcess[] = [];
  const peers: EthernetPeer[] = [];
  afterEach(() => {
    for (const p of running.splice(0)) p.kill();
    for (const p of peers.splice(0)) p.close();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function boot(name: string, args: string[], append?: string): ConsoleProcess {
    const p = startQemuMicrovm(guest(name), args, append);
    running.push(p);
    return p;
  }

  function image(name: string, bytes: number): string {
    const file = path.join(dir, name);
    writeFileSync(file, '');
    truncateSync(file, bytes);
    return file;
  }

  it('diskcheck stamps every sector of an image, flushes and verifies; the host finds the stamps', async () => {
    const img = image('rw.img', 2 << 20);
    const q = boot('diskcheck', [...VIRTIO_MODERN, ...qemuDisk(img, { serial: 'e2e-disk' })], 'run=9 passes=2 req=16K depth=8');
    expect(await q.exited).toBe(33);
    expect(q.console()).toBe(
      'diskcheck: slot=23 capacity=4096 sectors=4096 req=16384 depth=8 run=9 passes=2 ro=0 flush=1 verify-only=0\n'
      + 'diskcheck: id="e2e-disk"\n'
      + 'diskcheck: pass 1: wrote 4096 sectors, flushed, read 4096, ok 4096, bad 0\n'
      + 'diskcheck: pass 2: wrote 4096 sectors, flushed, read 4096, ok 4096, bad 0\n'
      + 'diskcheck: PASS\n');

    const disk = readFileSync(img);
    expect(checkDiskStamps(disk, 9, 2)).toEqual({ ok: 4096, bad: 0, firstBad: [] });
    // The host check can fail: pass 1's stamps are gone, and one flipped byte is one bad sector.
    expect(checkDiskStamps(disk, 9, 1).bad).toBe(4096);
    disk[1000 * SECTOR + 100] ^= 1;
    expect(checkDiskStamps(disk, 9, 2)).toMatchObject({ ok: 4095, bad: 1 });
  });

  it('a second boot verifies the stamps the first left (verify-only), and catches a corrupted sector', async () => {
    const img = image('verify.img', 1 << 20);
    expect(await boot('diskcheck', [...VIRTIO_MODERN, ...qemuDisk(img)], 'run=4 passes=1').exited).toBe(33);

    const again = boot('diskcheck', [...VIRTIO_MODERN, ...qemuDisk(img, { readonly: true })], 'run=4 passes=1 verify-only=1');
    expect(await again.exited).toBe(33);
    expect(again.console()).toContain('diskcheck: pass 1: wrote 0 sectors, not flushed, read 2048, ok 2048, bad 0\n');

    const disk = readFileSync(img);
    disk[77 * SECTOR + 300] ^= 0x40;
    writeFileSync(img, disk);
    const caught = boot('diskcheck', [...VIRTIO_MODERN, ...qemuDisk(img, { readonly: true })], 'run=4 passes=1 verify-only=1');
    expect(await caught.exited).toBe(35);
    expect(caught.console()).toContain('diskcheck: bad sector 77: magic=0x314b48434b534944 lba=77 run=4 pass=1 sum=bad first-diff-byte=300 expected run=4 pass=1\n');
    expect(caught.console()).toContain('read 2048, ok 2047, bad 1\n');
  });

  it('passes=0 runs until `q`; the disk then holds the stamps of the pass it quit after', async () => {
    const img = image('forever.img', 1 << 20);
    const q = boot('diskcheck', [...VIRTIO_MODERN, ...qemuDisk(img)], 'run=2 passes=0');
    await q.waitForConsole(/pass 3: /, 30_000);
    q.type('q');
    expect(await q.exited).toBe(33);
    const pass = Number(/diskcheck: quit after pass (\d+)\n/.exec(q.console())?.[1]);
    expect(pass).toBeGreaterThanOrEqual(3);
    expect(q.console()).not.toContain('bad 1');
    expect(checkDiskStamps(readFileSync(img), 2, pass)).toEqual({ ok: 2048, bad: 0, firstBad: [] });
  });

  it('a read-only drive makes diskcheck report write errors and exit, not hang', async () => {
    const img = image('ro.img', 1 << 20);
    const q = boot('diskcheck', [...VIRTIO_MODERN, ...qemuDisk(img, { readonly: true })], 'req=4K');
    expect(await q.exited).toBe(37);
    expect(q.console()).toContain(' ro=1 ');
    // 2048 sectors in 4 KiB requests: 256 writes, all refused with VIRTIO_BLK_S_IOERR (1).
    expect(q.console()).toContain('diskcheck: write errors: 256 requests failed (IOERR 256, UNSUPP 0, other 0), first at sector 0 status 1\n');
    expect(q.console()).toMatch(/diskcheck: FAIL write errors\n$/);
    expect(readFileSync(img).equals(Buffer.alloc(1 << 20))).toBe(true);
  });

  it('netecho answers ARP and ping, and thousands of UDP datagrams with counters in order', async () => {
    const [qemuPort, peerPort] = await freeUdpPorts(2);
    const peer = await EthernetPeer.open({ remotePort: qemuPort, localPort: peerPort });
    peers.push(peer);
    const q = boot('netecho', [...VIRTIO_MODERN, ...qemuUdpNet(qemuPort, peer.port, '52:54:00:ab:cd:ef')], 'ip=10.0.2.15 port=7');
    await q.waitForConsole(/netecho: ready\n/, 20_000);
    expect(q.console()).toBe('netecho: slot=23 mac=52:54:00:ab:cd:ef ip=10.0.2.15 port=7 link=up queues=256/256\nnetecho: ready\n');

    const mac = await peer.resolve('10.0.2.15');
    expect(macToString(mac)).toBe('52:54:00:ab:cd:ef');
    expect(await peer.ping('10.0.2.15', mac, 1)).not.toBeNull();

    const r = await peer.udpExchange({ dstIp: '10.0.2.15', dstMac: mac, dstPort: 7, count: 2000, window: 16, payloadBytes: 64 });
    expect(r.errors).toEqual([]);
    expect({ sent: r.sent, received: r.received, lost: r.lost }).toEqual({ sent: 2000, received: 2000, lost: 0 });
    expect(r.counters[0]).toBe(1n);
    expect(r.counters[1999]).toBe(2000n);
    // Requests for another port or address get no reply, and no counter: the next one carries on.
    peer.send(Buffer.alloc(60));
    const more = await peer.udpExchange({ dstIp: '10.0.2.15', dstMac: mac, dstPort: 7, count: 10, srcPort: 40_001 });
    expect(more.counters).toEqual(Array.from({ length: 10 }, (_, i) => BigInt(2001 + i)));

    // The largest request whose reply fits a 1514-byte frame is 1464 bytes; one byte more is dropped.
    const big = await peer.udpExchange({ dstIp: '10.0.2.15', dstMac: mac, dstPort: 7, count: 20, payloadBytes: 1464, srcPort: 40_002 });
    expect(big.errors).toEqual([]);
    expect(big.counters).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(2011 + i)));
    const tooBig = await peer.udpExchange({ dstIp: '10.0.2.15', dstMac: mac, dstPort: 7, count: 1, payloadBytes: 1465, srcPort: 40_003, replyTimeoutMs: 500 });
    expect(tooBig.lost).toBe(1);

    q.type('q');
    expect(await q.exited).toBe(33);
    expect(q.console()).toMatch(/netecho: quit: udp 2030, arp [1-9]\d*, icmp 1, dropped 2\n$/);
  }, 120_000);
});
