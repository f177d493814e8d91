import { describe, expect, it } from 'vitest';
import { VIRTIO_MMIO_BASE, VIRTIO_MMIO_GSI_BASE, VIRTIO_MMIO_SLOTS, virtioMmioSlot } from '../../../../src/arch/x86/layout.js';
import { MmioReg } from '../../../../src/devices/virtio/constants.js';
import { EmptyVirtioSlot } from '../../../../src/devices/virtio/mmio-transport.js';
import { BOARD_DEVICES, boardDevices } from '../../../../src/machine/board.js';

describe('virtio-mmio slots as microvm (ioapic2=off) lays them out', () => {
  it('fills the top slot first: the first device at 0xfeb00e00 on GSI 23, the next at 0xfeb00c00', () => {
    expect(VIRTIO_MMIO_SLOTS).toBe(8);
    expect(VIRTIO_MMIO_BASE + virtioMmioSlot(0) * 512).toBe(0xfeb00e00);
    expect(VIRTIO_MMIO_GSI_BASE + virtioMmioSlot(0)).toBe(23);
    expect(VIRTIO_MMIO_BASE + virtioMmioSlot(1) * 512).toBe(0xfeb00c00);
  });

  it('an empty slot answers magic and version 2 with DeviceID 0, as QEMU\'s unused transports do', () => {
    const e = new EmptyVirtioSlot();
    expect(e.read(MmioReg.MAGIC_VALUE, 4)).toBe(0x74726976);
    expect(e.read(MmioReg.VERSION, 4)).toBe(2);
    expect(e.read(MmioReg.DEVICE_ID, 4)).toBe(0);
  });

  it('the device list a migration peer compares names each virtio device by slot', () => {
    const slot = { name: 'virtio-blk@0xfeb00e00', base: 0xfeb00e00, gsi: 23, state: new Int32Array(1), notifyFds: [] };
    expect(boardDevices({ virtio: [slot] })).toEqual([...BOARD_DEVICES, 'virtio-blk@0xfeb00e00']);
    expect(boardDevices({ virtio: [] })).toEqual([...BOARD_DEVICES]);
  });
});
