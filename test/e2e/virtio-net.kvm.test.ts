import { afterEach, expect, it } from 'vitest';
import { ConsoleProcess } from '../helpers/console-process.js';
import { EthernetPeer, freeUdpPorts } from '../helpers/ethernet-peer.js';
import { macToString } from '../helpers/ethernet-frames.js';
import { describeKvm } from '../helpers/kvm.js';
import { CLI, guest } from '../helpers/paths.js';

describeKvm('virtio-net on real KVM, driven by the netecho guest over the udp backend', () => {
  const running: ConsoleProcess[] = [];
  const peers: EthernetPeer[] = [];
  afterEach(() => {
    for (const p of running.splice(0)) p.kill();
    for (const p of peers.splice(0)) p.close();
  });

  it('netecho answers ARP, ping and thousands of UDP datagrams: none lost, counters in order', async () => {
    const [vmPort, peerPort] = await freeUdpPorts(2);
    const peer = await EthernetPeer.open({ remotePort: vmPort, localPort: peerPort });
    peers.push(peer);
    const vm = new ConsoleProcess(process.execPath, [
      CLI, 'run', guest('netecho'), '--net', `udp,local=127.0.0.1:${vmPort},remote=127.0.0.1:${peer.port},mac=52:54:00:ab:cd:ef`,
      '--cmdline', 'ip=10.0.2.15 port=7',
    ]);
    running.push(vm);
    await vm.waitForConsole(/netecho: ready\n/, 60_000);
    expect(vm.console()).toBe('netecho: slot=7 mac=52:54:00:ab:cd:ef ip=10.0.2.15 port=7 link=up queues=256/256\nnetecho: ready\n');

    const mac = await peer.resolve('10.0.2.15');
    expect(macToString(mac)).toBe('52:54:00:ab:cd:ef');
    expect(await peer.ping('10.0.2.15', mac, 1)).not.toBeNull();

    const r = await peer.udpExchange({ dstIp: '10.0.2.15', dstMac: mac, dstPort: 7, count: 3000, window: 16, payloadBytes: 64, replyTimeoutMs: 10_000 });
    expect(r.errors).toEqual([]);
    expect({ sent: r.sent, received: r.received, lost: r.lost }).toEqual({ sent: 3000, received: 3000, lost: 0 });
    expect(r.counters).toEqual(Array.from({ length: 3000 }, (_, i) => BigInt(i + 1)));

    vm.type('q');
    expect(await vm.exited).toBe(33);
    expect(vm.console()).toMatch(/netecho: quit: udp 3000, arp [1-9]\d*, icmp 1, dropped 0\n$/);
    expect(vm.stderr).toBe('');
  }, 240_000);
});
