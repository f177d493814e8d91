// A VM made to take an incoming migration (VmConfig.incoming) marks every VMM write to RAM from its
// creation, so that the migration may leave unmarked pages alone when the stream says they are zero:
// in preallocated RAM, reading each such page to see it is zero cost ~0.1 s per GiB. This holds only
// if every page that is not zero is marked, which the loader's writes (the kernel, its boot
// information) test here, on real KVM.
import { openSync } from 'node:fs';
import { afterEach, expect, it } from 'vitest';
import { MiB, PAGE_SIZE } from '../../src/arch/x86/layout.js';
import { Vm, type VmConfig } from '../../src/machine/vm.js';
import { describeKvm } from '../helpers/kvm.js';
import { randomBzImageFile } from '../helpers/linux-images.js';
import { guest } from '../helpers/paths.js';

let vm: Vm | undefined;
afterEach(async () => {
  await vm?.stop();
  vm?.dispose();
  vm = undefined;
});

function create(config: Partial<VmConfig>): Vm {
  vm = Vm.create({ kernelPath: guest('idle'), memBytes: 32 * MiB, cpus: 1, cmdline: 'idle', serialOutputFd: openSync('/dev/null', 'w'), ...config });
  return vm;
}

/** Pages of RAM holding anything but zeros, and how many of them carry no mark. */
function nonZeroPages(v: Vm): { nonZero: number; unmarked: number } {
  const zero = Buffer.alloc(PAGE_SIZE);
  let nonZero = 0;
  let unmarked = 0;
  for (const r of v.memory.regions) {
    const bytes = Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength);
    for (let page = 0; page < r.sizeBytes / PAGE_SIZE; page++) {
      if (bytes.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).equals(zero)) continue;
      nonZero++;
      if (!r.dirty.dirtyAt(page)) unmarked++;
    }
  }
  return { nonZero, unmarked };
}

describeKvm('an incoming VM\'s RAM: zero unless marked', () => {
  for (const preallocateMemory of [false, true]) {
    it(`every page the loader wrote is marked, until the guest first runs${preallocateMemory ? ' (preallocated RAM)' : ''}`, () => {
      const v = create({ incoming: true, preallocateMemory });
      const pages = nonZeroPages(v);
      expect(pages.nonZero).toBeGreaterThan(0); // the kernel and its boot information
      expect(pages.unmarked).toBe(0);
      expect(v.ramZeroUnlessMarked).toBe(true);
      v.startParked();
      expect(v.ramZeroUnlessMarked).toBe(true);
      v.start();
      expect(v.ramZeroUnlessMarked).toBe(false);
      expect(v.memory.isLogging).toBe(false); // the running guest's VMM writes cost no marking
    });
  }

  it('a Linux kernel\'s loader (boot parameters, command line, the kernel at 16 MiB) has every page it wrote marked too', () => {
    const v = create({ kernelPath: randomBzImageFile(1024 * 1024), cmdline: 'console=ttyS0 '.repeat(20), incoming: true, preallocateMemory: true });
    const pages = nonZeroPages(v);
    expect(pages.nonZero).toBeGreaterThan(256); // the kernel's 1 MiB alone
    expect(pages.unmarked).toBe(0);
    expect(v.ramZeroUnlessMarked).toBe(true);
  });

  it('a VM not made for an incoming migration claims nothing; nor does one whose marking is switched off, whose loader writes go unmarked', () => {
    expect(create({}).ramZeroUnlessMarked).toBe(false);
    vm!.dispose();
    vm = undefined;
    const unmarked = create({ incoming: true, testOnly: { testOnlySkipVmmDirtyMarking: true } });
    expect(unmarked.ramZeroUnlessMarked).toBe(false);
    expect(nonZeroPages(unmarked).unmarked).toBeGreaterThan(0);
  });
});
