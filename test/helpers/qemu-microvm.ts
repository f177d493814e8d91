import { spawnSync } from 'node:child_process';
import { ConsoleProcess } from './console-process.js';

/** Whether QEMU can be run here (the tests that compare against it skip loudly otherwise). */
export const qemuAvailable = spawnSync('qemu-system-x86_64', ['--version']).status === 0;

/**
 * The machine guests/README.md runs our guests on: microvm with COM1 on stdio and isa-debug-exit, under
 * TCG (no /dev/kvm needed) unless ACCEL=kvm, as for guests/test-under-qemu.sh. QEMU exits with
 * (code << 1) | 1 for guest_exit(code).
 */
export const QEMU_MICROVM_ARGS = [
  '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-accel', process.env.ACCEL ?? 'tcg',
  '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio',
  '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
];

/** QEMU's virtio-mmio speaks the legacy (version 1) registers unless told otherwise; our guests need 2. */
export const VIRTIO_MODERN = ['-global', 'virtio-mmio.force-legacy=false'];

/** `-device virtio-blk-device` over a raw image file. */
export function qemuDisk(file: string, opts: { readonly?: boolean; serial?: string } = {}): string[] {
  return [
    '-device', `virtio-blk-device,drive=d0${opts.serial ? `,serial=${opts.serial}` : ''}`,
    '-drive', `if=none,id=d0,file=${file},format=raw${opts.readonly ? ',readonly=on' : ''}`,
  ];
}

/** `-device virtio-net-device` whose frames travel one per UDP datagram between local and remote. */
export function qemuUdpNet(localPort: number, remotePort: number, mac?: string): string[] {
  return [
    '-netdev', `dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${localPort},remote.type=inet,remote.host=127.0.0.1,remote.port=${remotePort}`,
    '-device', `virtio-net-device,netdev=n0${mac ? `,mac=${mac}` : ''}`,
  ];
}

/** Boots guest (an ELF path) on QEMU microvm with the extra arguments and an optional command line. */
export function startQemuMicrovm(kernel: string, args: string[], append?: string): ConsoleProcess {
  return new ConsoleProcess('qemu-system-x86_64', [
    ...QEMU_MICROVM_ARGS, ...args, '-kernel', kernel, ...(append === undefined ? [] : ['-append', append]),
  ]);
}
