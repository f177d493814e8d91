import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeBzImage } from '../helpers/linux-images.js';
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
    const cases: [string[], RegExp][] = [
      [['--kernel', old], /old-bzImage: boot protocol 2.04 is too old: tsvmm needs 2.06 or newer/],
      [['--kernel', file('no-64', makeBzImage({ xloadflags: 0 }))], /no 64-bit entry point \(XLF_KERNEL_64\)/],
      [['--kernel', bz, '--initrd', big, '--mem', '32M'], /bzImage: initrd of 39321600 bytes does not fit .* give the VM more memory \(--mem\) or use a smaller initrd/],
      [['--kernel', bz, '--initrd', path.join(dir, 'nope')], /initrd file .*nope does not exist/],
      [['--kernel', bz, '--cmdline', 'x'.repeat(33)], /command line is 33 bytes; this kernel accepts at most 32/],
      [['--kernel', guest('hello'), '--initrd', bz], /is a multiboot kernel: --initrd is for Linux kernels/],
      [['--kernel', bz, guest('hello')], /both --kernel and KERNEL/],
      [['--cmdline', 'x'], /missing kernel: --kernel PATH/],
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
});
