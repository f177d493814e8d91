// virtio-net over a tap device: the guest talks to the host kernel's own network stack, inside a
// network namespace the test creates (so nothing touches the host's interfaces).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterEach, expect, it } from 'vitest';
import { ConsoleProcess } from '../helpers/console-process.js';
import { describeKvm } from '../helpers/kvm.js';
import { CLI, guest } from '../helpers/paths.js';

// A minimal system (such as the nested KVM VM) may not have loaded tun yet.
if (process.getuid?.() === 0 && !existsSync('/dev/net/tun')) spawnSync('modprobe', ['tun']);
const canTap = process.getuid?.() === 0 && existsSync('/dev/net/tun') && spawnSync('ip', ['-V']).status === 0;
const ns = `tsvmm-tap-${process.pid}`;
const ifname = `tsvtap${process.pid % 100000}`;
const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A UDP client run inside the namespace: `count` datagrams to netecho, `window` in flight; prints JSON. */
const CLIENT = `
const dgram = require('node:dgram');
const [count, window] = [Number(process.argv[1]), Number(process.argv[2])];
const s = dgram.createSocket('udp4');
const counters = []; let sent = 0; let bad = 0;
const send = () => { while (sent < count && sent - counters.length < window) { const p = Buffer.alloc(32); p.writeUInt32LE(sent++, 0); s.send(p, 7, '10.0.2.15'); } };
const timer = setTimeout(() => { console.log(JSON.stringify({ sent, received: counters.length, counters, bad, timedOut: true })); process.exit(0); }, 120000);
s.on('message', (m) => {
  const seq = counters.length;
  if (m.length !== 40 || m.readUInt32LE(8) !== seq) bad++;
  counters.push(Number(m.readBigUInt64LE(0)));
  if (counters.length === count) { clearTimeout(timer); console.log(JSON.stringify({ sent, received: counters.length, counters, bad })); s.close(); return; }
  send();
});
s.bind(40000, () => send());
`;

(canTap ? describeKvm : describeKvm.skip)('virtio-net on a tap device in a network namespace (real KVM)', () => {
  const running: ConsoleProcess[] = [];
  afterEach(() => {
    for (const p of running.splice(0)) p.kill();
    spawnSync('ip', ['netns', 'del', ns]);
  });

  it('netecho answers the kernel\'s ARP and thousands of datagrams from a client in the namespace', async () => {
    ip('netns', 'add', ns);
    const vm = new ConsoleProcess(process.execPath, [CLI, 'run', guest('netecho'), '--net', `tap,ifname=${ifname}`, '--cmdline', 'ip=10.0.2.15 port=7']);
    running.push(vm);
    // tsvmm creates the tap (TUNSETIFF) before the guest runs; move it into the namespace and give the
    // namespace's end an address on the guest's subnet.
    for (let i = 0; spawnSync('ip', ['link', 'show', ifname]).status !== 0; i++) {
      if (i > 600) throw new Error(`tsvmm did not create ${ifname}; stderr: ${vm.stderr}`);
      await sleep(100);
    }
    ip('link', 'set', ifname, 'netns', ns);
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', '10.0.2.2/24', 'dev', ifname);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', ifname, 'up');
    await vm.waitForConsole(/netecho: ready\n/, 60_000);
    expect(vm.console()).toBe('netecho: slot=7 mac=52:54:00:12:34:56 ip=10.0.2.15 port=7 link=up queues=256/256\nnetecho: ready\n');

    const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', CLIENT, '2000', '8'], { timeout: 180_000 }).toString();
    const r = JSON.parse(out) as { sent: number; received: number; counters: number[]; bad: number; timedOut?: boolean };
    expect({ sent: r.sent, received: r.received, bad: r.bad, timedOut: r.timedOut }).toEqual({ sent: 2000, received: 2000, bad: 0, timedOut: undefined });
    expect(r.counters).toEqual(Array.from({ length: 2000 }, (_, i) => i + 1));
    // The kernel learned the guest's MAC from netecho's ARP reply.
    expect(ip('netns', 'exec', ns, 'ip', 'neigh', 'show', '10.0.2.15')).toMatch(/lladdr 52:54:00:12:34:56/);

    vm.type('q');
    expect(await vm.exited).toBe(33);
    expect(vm.console()).toMatch(/netecho: quit: udp 2000, arp [1-9]\d*, /);
  }, 300_000);
});
