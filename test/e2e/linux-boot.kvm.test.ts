import { readdirSync } from 'node:fs';
import { expect, it } from 'vitest';
import { MiB } from '../../src/arch/x86/layout.js';
import { e820Entries } from '../../src/boot/boot-params.js';
import { memoryMap } from '../../src/boot/memory-map.js';
import { ramLayout } from '../../src/memory/guest-memory.js';
import { describeKvm, kvmIsPvm } from '../helpers/kvm.js';
import { TsvmmProcess } from '../helpers/tsvmm-process.js';

/**
 * The distribution kernel this machine has, as Debian ships it (a bzImage; .ci/run installs
 * linux-image-amd64 where it is missing), or the kernel TSVMM_LINUX_KERNEL names (a bzImage or a
 * vmlinux, e.g. the one scripts/nested-kvm/run.sh extracts into /tmp/nested-kvm-cache).
 */
function linuxKernel(): string {
  const named = process.env.TSVMM_LINUX_KERNEL;
  if (named !== undefined && named !== '') return named;
  const found = readdirSync('/boot').filter((f) => /^vmlinuz-.*-amd64$/.test(f)).sort();
  if (found.length === 0) throw new Error('no /boot/vmlinuz-*-amd64: apt-get install linux-image-amd64 (or set TSVMM_LINUX_KERNEL)');
  return `/boot/${found.at(-1)!}`;
}

const MEM = 512 * MiB;
/**
 * Nested KVM (under QEMU TCG) takes about a minute to the banner and three to the second CPU; kvm_pvm
 * about 20 s to the banner (guest CPL0 code emulated) and 40 s to the MP table; hardware KVM, a second.
 */
const BOOT_TIMEOUT_MS = 6 * 60_000;

const hex16 = (n: number) => `0x${n.toString(16).padStart(16, '0')}`;

describeKvm('Linux boots on tsvmm', () => {
  /** Starts tsvmm on Debian's kernel; `waitForConsole` fails at once, saying why, if tsvmm ends first. */
  function boot(extra: string[]) {
    const kernel = linuxKernel();
    const vm = new TsvmmProcess(['--kernel', kernel, '--mem', '512M', '--cpus', '2', '--cmdline', 'console=ttyS0 earlyprintk=ttyS0', ...extra], 'linux');
    let exitStatus: number | null | undefined;
    void vm.exited.then((s) => { exitStatus = s; });
    const waitForConsole = async (pattern: RegExp) => {
      await vm.waitFor(() => exitStatus !== undefined || pattern.test(vm.console()), `console ${pattern}`, BOOT_TIMEOUT_MS);
      if (!pattern.test(vm.console())) {
        throw new Error(`tsvmm exited with ${exitStatus} before ${pattern}: ${vm.stderr.trim()}; console ends: ${vm.console().slice(-600)}`);
      }
    };
    return { kernel, vm, waitForConsole };
  }

  /** Linux prints the whole e820 table before its next line; the serial console ends lines with \r\n. */
  async function expectOurE820(vm: TsvmmProcess, waitForConsole: (p: RegExp) => Promise<void>) {
    const expected = e820Entries(memoryMap(ramLayout(MEM))).map((e) =>
      `BIOS-e820: [mem ${hex16(e.addr)}-${hex16(e.addr + e.size - 1)}] ${e.type === 1 ? 'usable' : 'reserved'}`);
    await waitForConsole(/BIOS-e820: .*\r?\n(?!.*BIOS-e820)[^\n]*\n/);
    const printed = [...vm.console().matchAll(/BIOS-e820: \[mem [^\]]+\] \w+/g)].map((m) => m[0]);
    expect(printed).toEqual(expected);
    expect(vm.console()).toContain('Command line: console=ttyS0 earlyprintk=ttyS0');
  }

  it("Debian's kernel, unpacked on the host, prints its banner, the e820 map our loader wrote and our MP table's two vCPUs, and (where the host runs it that far) brings both up", async () => {
    const t0 = Date.now();
    const { kernel, vm, waitForConsole } = boot([]);
    try {
      await waitForConsole(/Linux version \d+\.\d+/);
      const bannerMs = Date.now() - t0;
      await expectOurE820(vm, waitForConsole);
      // The MP table lists both vCPUs, as Linux reports when it parses it, and the AP starts (INIT/SIPI
      // through the in-kernel LAPIC; KVM_RUN's EAGAIN on the way).
      await waitForConsole(/Processors: 2\r?\n/);
      if (kvmIsPvm()) {
        // kvm_pvm emulates the kernel (CPL0) instruction by instruction and cannot emulate all of it:
        // Debian's 6.1 stops in mm_init at a lock cmpxchg16b (f0 48 0f c7 ...), under QEMU too, long
        // before the AP starts. What we can check here ends with the MP table.
        process.stderr.write(`linux-boot: "Linux version" after ${(bannerMs / 1000).toFixed(1)} s, the MP table's 2 CPUs after ${((Date.now() - t0) / 1000).toFixed(1)} s (${kernel}); kvm_pvm cannot run the kernel as far as the second CPU\n`);
        vm.kill('SIGTERM');
        expect([143, 6]).toContain(await vm.exited);
        return;
      }
      await waitForConsole(/smp: Brought up 1 node, 2 CPUs/);
      process.stderr.write(`linux-boot: "Linux version" after ${(bannerMs / 1000).toFixed(1)} s, both CPUs up after ${((Date.now() - t0) / 1000).toFixed(1)} s (${kernel})\n`);
      vm.kill('SIGTERM');
      expect(await vm.exited).toBe(143);
    } finally {
      vm.kill();
    }
  }, BOOT_TIMEOUT_MS + 60_000);

  // The decompressor is guest CPL0 code: at kvm_pvm's ~2 million instructions per second, unpacking
  // Debian's xz payload alone takes many minutes, more than CI can give one test.
  const itUnlessPvm = kvmIsPvm() ? it.skip : it;
  if (kvmIsPvm()) process.stderr.write('linux-boot: SKIPPING the --kernel-decompress guest boot: /dev/kvm is kvm_pvm, which emulates the decompressor too slowly for a test\n');

  itUnlessPvm('with --kernel-decompress guest, the bzImage\'s own decompressor runs and the kernel reaches the same e820 map', async () => {
    const t0 = Date.now();
    const { kernel, vm, waitForConsole } = boot(['--kernel-decompress', 'guest']);
    try {
      // (Debian's decompressor is silent: CONFIG_X86_VERBOSE_BOOTUP is off.)
      await waitForConsole(/Linux version \d+\.\d+/);
      await expectOurE820(vm, waitForConsole);
      process.stderr.write(`linux-boot (guest decompresses): "Linux version" after ${((Date.now() - t0) / 1000).toFixed(1)} s (${kernel})\n`);
    } finally {
      vm.kill();
    }
  }, BOOT_TIMEOUT_MS + 60_000);
});
