import { writeFileSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compressAsKbuild, makeBzImage, makeVmlinux } from '../helpers/linux-images.js';
import { guest } from '../helpers/paths.js';
import { runCli } from '../helpers/run-cli.js';

// Bad input is refused the same way on hosts with and without KVM: these run everywhere.
describe('tsvmm CLI: bad input gets one clear line on stderr and a non-zero status', () => {
  it('prints help and version', async () => {
    const help = await runCli(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/Usage: tsvmm/);
    expect(help.stdout).toMatch(/--mem SIZE/);
    const version = await runCli(['--version']);
    expect(version.status).toBe(0);
    expect(version.stdout).toMatch(/^tsvmm \d+\.\d+\.\d+\n$/);
    const none = await runCli([]);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/Usage: tsvmm/);
  });

  it('a missing disk image is refused before the VM starts, naming the file', async () => {
    const r = await runCli(['run', guest('hello'), '--disk', '/nonexistent/disk.img']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('tsvmm: --disk /nonexistent/disk.img: the image file does not exist (create it, e.g. with truncate -s 64M /nonexistent/disk.img)\n');
  });

  it('bad --disk and --net values get one line and a pointer to --help', async () => {
    for (const [args, message] of [
      [['--disk', 'x.img,rw'], "tsvmm: --disk x.img,rw: unknown option 'rw' (only 'readonly' is known)"],
      [['--net', 'udp,local=127.0.0.1:5000'], 'tsvmm: --net udp,local=127.0.0.1:5000: udp needs local=HOST:PORT and remote=HOST:PORT'],
      [['--net', 'udp,local=localhost:5000,remote=127.0.0.1:5001'], 'tsvmm: --net: local=localhost:5000 is not IP:PORT (e.g. 127.0.0.1:5555)'],
      [['--net', 'user'], "tsvmm: --net user: unknown backend 'user' (use udp,local=HOST:PORT,remote=HOST:PORT or tap,ifname=NAME)"],
      [['--net', 'tap,ifname=t0,mac=01:00:00:00:00:01'], 'tsvmm: --net: mac=01:00:00:00:00:01 is a multicast address; a NIC needs a unicast one'],
    ] as const) {
      const r = await runCli(['run', guest('hello'), ...args]);
      expect(r.status).toBe(2);
      expect(r.stderr).toBe(`${message}\nTry 'tsvmm --help' for more information.\n`);
    }
  });

  it('a udp --net whose local port is taken is refused before the VM starts', async () => {
    const { createSocket } = await import('node:dgram');
    const taken = createSocket('udp4');
    await new Promise<void>((resolve) => taken.bind(0, '127.0.0.1', () => resolve()));
    const port = taken.address().port;
    try {
      const r = await runCli(['run', guest('hello'), '--net', `udp,local=127.0.0.1:${port},remote=127.0.0.1:9`]);
      expect(r.status).toBe(2);
      expect(r.stderr).toBe(`tsvmm: --net udp: cannot bind 127.0.0.1:${port}: EADDRINUSE\n`);
    } finally {
      taken.close();
    }
  });

  it('missing kernel file', async () => {
    const r = await runCli(['run', '/nonexistent/kernel.elf']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('tsvmm: kernel file /nonexistent/kernel.elf does not exist\n');
  });

  it('a file that is not a kernel', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-'));
    const file = path.join(dir, 'not-a-kernel');
    writeFileSync(file, 'hello world\n'.repeat(100));
    const r = await runCli(['run', file]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/not a kernel tsvmm can boot: neither a Linux bzImage \("HdrS" at 0x202\), an ELF64 vmlinux, nor a multiboot kernel/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('Linux kernels it cannot boot, initrds that do not fit, and options that do not go together', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-'));
    const file = (name: string, bytes: Uint8Array) => {
      writeFileSync(path.join(dir, name), bytes);
      return path.join(dir, name);
    };
    const old = file('old-bzImage', makeBzImage({ version: 0x0204 }));
    const bz = file('bzImage', makeBzImage({ cmdlineSize: 32 }));
    const big = file('big-initrd', new Uint8Array(300 * 1024 * 1024 / 8));
    const damaged = compressAsKbuild(makeVmlinux(), 'xz');
    damaged[40] ^= 0xff;
    const cases: [string[], RegExp][] = [
      [['--kernel', old], /old-bzImage: boot protocol 2.04 is too old: tsvmm needs 2.06 or newer/],
      [['--kernel', file('no-64', makeBzImage({ xloadflags: 0 }))], /no 64-bit entry point \(XLF_KERNEL_64\)/],
      [['--kernel', bz, '--initrd', big, '--mem', '32M'], /bzImage: initrd of 39321600 bytes does not fit .* give the VM more memory \(--mem\) or use a smaller initrd/],
      [['--kernel', bz, '--initrd', path.join(dir, 'nope')], /initrd file .*nope does not exist/],
      [['--kernel', bz, '--cmdline', 'x'.repeat(33)], /command line is 33 bytes; this kernel accepts at most 32/],
      [['--kernel', guest('hello'), '--initrd', bz], /is a multiboot kernel: --initrd is for Linux kernels/],
      [['--kernel', bz, guest('hello')], /both --kernel and KERNEL/],
      [['--cmdline', 'x'], /missing kernel: --kernel PATH/],
      [['--kernel', file('damaged', makeBzImage({ compressed: damaged }))], /damaged: bzImage payload \(xz\) does not decompress: xz says .*: the file is damaged/],
      [['--kernel', bz, '--kernel-decompress', 'later'], /--kernel-decompress: 'later' is neither 'host' nor 'guest'/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(['run', ...args, '--kvm', '/nonexistent/kvm']);
      expect(r.stderr).toMatch(message);
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n').filter((l) => !l.startsWith('Try '))).toHaveLength(1);
    }
  });

  it('a kernel path that is a directory', async () => {
    const r = await runCli(['run', tmpdir()]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is a directory/);
  });

  it('memory sizes that do not parse or do not fit', async () => {
    const bad = await runCli(['run', guest('hello'), '--mem', 'lots']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--mem: cannot parse memory size 'lots'/);
    const huge = await runCli(['run', guest('hello'), '--mem', '64T']);
    expect(huge.status).toBe(2);
    expect(huge.stderr).toMatch(/--mem 64T does not fit: this host has/);
    const tiny = await runCli(['run', guest('hello'), '--mem', '1M']);
    expect(tiny.status).toBe(2);
    expect(tiny.stderr).toMatch(/too small|more memory/);
  });

  it('unknown options and commands', async () => {
    const opt = await runCli(['run', guest('hello'), '--frobnicate']);
    expect(opt.status).toBe(2);
    expect(opt.stderr).toMatch(/Unknown option '--frobnicate'/);
    const cmd = await runCli(['fly']);
    expect(cmd.status).toBe(2);
    expect(cmd.stderr).toMatch(/unknown command 'fly'/);
    const cpus = await runCli(['run', guest('hello'), '--cpus', 'two']);
    expect(cpus.status).toBe(2);
    expect(cpus.stderr).toMatch(/--cpus: 'two'/);
  });

  it('no KVM device: says which and what to do, status 4', async () => {
    const r = await runCli(['run', guest('hello'), '--kvm', '/nonexistent/kvm']);
    expect(r.status).toBe(4);
    expect(r.stderr).toBe('tsvmm: /nonexistent/kvm does not exist: this host has no KVM (enable virtualization, load kvm_intel or kvm_amd)\n');
  });

  it('a KVM device path that is not KVM', async () => {
    const r = await runCli(['run', guest('hello'), '--kvm', '/dev/null']);
    expect(r.status).toBe(4);
    expect(r.stderr).toBe('tsvmm: /dev/null is not a KVM device (KVM_GET_API_VERSION failed: ENOTTY (25))\n');
  });

  it('an incoming port already in use: said at once, before any VM is built (so also without KVM)', async () => {
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    const { port } = squatter.address() as net.AddressInfo;
    try {
      const r = await runCli(['run', guest('dirtier'), '--incoming', `tcp:127.0.0.1:${port}`]);
      expect(r.status).toBe(2);
      expect(r.stderr).toBe(`tsvmm: cannot listen on tcp:127.0.0.1:${port}: the port is in use; choose another port\n`);
    } finally {
      squatter.close();
    }
  });
});
