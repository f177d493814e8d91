import { openSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BootError } from '../boot/boot-error.js';
import { readKernelFile, type KernelDecompress } from '../boot/kernel-file.js';
import { packageRoot } from '../kvm/addon.js';
import { KvmUnavailableError } from '../kvm/kvm.js';
import { Vm, VmConfigError, planBoot, type BootPlan, type VmConfig } from '../machine/vm.js';
import { GuestMemoryAllocationError } from '../memory/guest-memory.js';
import type { VirtioDeviceSpec } from '../machine/virtio-devices.js';
import type { VmController } from '../machine/vm-controller.js';
import type { QmpServer } from '../control/qmp-server.js';
import type { TlsCredsX509 } from '../migration/tls.js';
import type { IncomingListener } from '../migration/transport.js';
import type { VcpuStop } from '../vcpu/exit-handler.js';
import { ExitStatus } from './exit-status.js';
import { formatBytes, parseMemorySize } from './parse-size.js';
import { USAGE } from './usage.js';
import { tracePhase } from '../machine/phase-trace.js';
import type { PrestartedThread } from '../vcpu/prestarted-thread.js';
import type { DeviceOption } from './device-options.js';
// Migration, the control plane, TLS and the virtio backends are imported (import()) only when the
// options name them: with Node's net, tls, crypto, dgram and fs/promises behind them they are about
// half of the CLI's load time, which a plain `run` does not need (bench/launch).

/** A command-line mistake: printed as one line on stderr with a pointer to --help. */
class UsageError extends Error {
  override name = 'UsageError';
}

function version(): string {
  const pkg = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

interface RunOptions {
  kernel: string;
  initrd: string | undefined;
  memBytes: number;
  cpus: number;
  cmdline: string;
  /** Who unpacks a bzImage's compressed kernel (--kernel-decompress). */
  kernelDecompress: KernelDecompress;
  serial: { kind: 'stdio' } | { kind: 'file'; path: string };
  kvmPath: string;
  /** Allocate all guest RAM at start (--mem-prealloc, as QEMU's -mem-prealloc). */
  memPrealloc: boolean;
  /** QMP control socket address (unix:PATH or tcp:HOST:PORT). */
  qmp: string | undefined;
  /** Wait for an incoming migration at tcp:HOST:PORT (or 'defer': wait for QMP migrate-incoming). */
  incoming: string | undefined;
  /** tls-creds-x509 objects (--object), by id. */
  tlsCreds: Map<string, TlsCredsX509>;
  /** --disk and --net, in command-line order: the order of the virtio-mmio slots they fill. */
  devices: DeviceOption[];
}

async function parseRun(args: string[]): Promise<RunOptions | 'help'> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        mem: { type: 'string', default: '256M' },
        'mem-prealloc': { type: 'boolean', default: false },
        cpus: { type: 'string', default: '1' },
        kernel: { type: 'string' },
        initrd: { type: 'string' },
        cmdline: { type: 'string', default: '' },
        'kernel-decompress': { type: 'string', default: 'host' },
        serial: { type: 'string', default: 'stdio' },
        kvm: { type: 'string', default: '/dev/kvm' },
        qmp: { type: 'string' },
        incoming: { type: 'string' },
        object: { type: 'string', multiple: true },
        disk: { type: 'string', multiple: true },
        net: { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
      tokens: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals, tokens } = parsed;
  if (values.help) return 'help';
  if (values.kernel !== undefined && positionals.length > 0) {
    throw new UsageError(`run: both --kernel and KERNEL '${positionals[0]}' given: name the kernel once`);
  }
  const kernel = values.kernel ?? positionals[0];
  if (kernel === undefined || kernel === '') {
    throw new UsageError('run: missing kernel: --kernel PATH (a bzImage, vmlinux or multiboot kernel, e.g. guests/build/hello.elf)');
  }
  if (positionals.length > 1) throw new UsageError(`run: unexpected argument '${positionals[1]}'`);
  let memBytes: number;
  try {
    memBytes = parseMemorySize(values.mem);
  } catch (e) {
    throw new UsageError(`--mem: ${(e as Error).message}`);
  }
  if (memBytes > totalmem()) {
    throw new UsageError(`--mem ${values.mem} does not fit: this host has ${formatBytes(totalmem())} of memory`);
  }
  if (!/^\d+$/.test(values.cpus) || Number(values.cpus) < 1) throw new UsageError(`--cpus: '${values.cpus}' is not a positive whole number`);
  const kernelDecompress = values['kernel-decompress'];
  if (kernelDecompress !== 'host' && kernelDecompress !== 'guest') {
    throw new UsageError(`--kernel-decompress: '${kernelDecompress}' is neither 'host' nor 'guest'`);
  }
  let serial: RunOptions['serial'];
  if (values.serial === 'stdio') serial = { kind: 'stdio' };
  else if (values.serial.startsWith('file:') && values.serial.length > 5) serial = { kind: 'file', path: values.serial.slice(5) };
  else throw new UsageError(`--serial: '${values.serial}' is neither 'stdio' nor 'file:PATH'`);
  if (values.incoming !== undefined && values.incoming !== 'defer') {
    const { parseTcpUri } = await import('../migration/transport.js');
    try {
      parseTcpUri(values.incoming);
    } catch (e) {
      throw new UsageError(`--incoming: ${(e as Error).message} (or 'defer')`);
    }
  }
  if (values.qmp !== undefined) {
    const { parseSocketAddress } = await import('../control/qmp-address.js');
    try {
      parseSocketAddress(values.qmp, { listening: true });
    } catch (e) {
      throw new UsageError(`--qmp: ${(e as Error).message}`);
    }
  }
  if (values.incoming === 'defer' && values.qmp === undefined) throw new UsageError("--incoming defer needs --qmp, where migrate-incoming will name the address");
  const tlsCreds = new Map<string, TlsCredsX509>();
  for (const spec of values.object ?? []) {
    const { parseTlsCredsObject } = await import('../migration/tls.js');
    const creds = parseTlsCredsObject(spec);
    if (tlsCreds.has(creds.id)) throw new UsageError(`--object: two objects with id '${creds.id}'`);
    tlsCreds.set(creds.id, creds);
  }
  const devices: DeviceOption[] = [];
  for (const t of tokens ?? []) {
    if (t.kind !== 'option' || (t.name !== 'disk' && t.name !== 'net')) continue;
    const { parseDiskOption, parseNetOption } = await import('./device-options.js');
    try {
      devices.push(t.name === 'disk' ? parseDiskOption(t.value ?? '') : parseNetOption(t.value ?? ''));
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return {
    kernel, initrd: values.initrd, memBytes, memPrealloc: values['mem-prealloc'], cpus: Number(values.cpus), cmdline: values.cmdline, kernelDecompress, serial, kvmPath: values.kvm,
    qmp: values.qmp, incoming: values.incoming, tlsCreds, devices,
  };
}

/** How a stopped VM maps to the process's exit status, with a note for stderr where one helps. */
export function stopStatus(stop: VcpuStop | undefined): { status: number; note?: string } {
  if (stop === undefined) return { status: ExitStatus.OK };
  switch (stop.kind) {
    case 'guest-exit':
      return { status: stop.status & 0xff };
    case 'poweroff':
      return { status: ExitStatus.OK };
    case 'reset':
      return { status: ExitStatus.OK, note: 'guest requested a reset; tsvmm does not reboot guests (like qemu -no-reboot)' };
    case 'shutdown':
      return { status: ExitStatus.GUEST_CRASH, note: 'guest triple-faulted (KVM_EXIT_SHUTDOWN)' };
    case 'error':
      return { status: ExitStatus.GUEST_CRASH, note: stop.message };
  }
}

/** What the kernel file and its options say to boot, checked before any VM exists. */
interface CheckedBoot {
  readonly cmdline: string;
  readonly plan: BootPlan;
}

function createVm(options: RunOptions, boot: CheckedBoot, serialOutputFd: number, testOnly: VmConfig['testOnly'], virtio: VirtioDeviceSpec[], launch: Launch): Vm {
  const { cmdline, plan } = boot;
  return Vm.create({
    kernelPath: options.kernel,
    initrdPath: options.initrd,
    memBytes: options.memBytes,
    preallocateMemory: options.memPrealloc,
    incoming: options.incoming !== undefined,
    cpus: options.cpus,
    cmdline,
    plan,
    serialOutputFd,
    kvmPath: options.kvmPath,
    testOnly,
    virtio,
    prestartedVcpuThread: launch.prestartedVcpuThread,
  });
}

async function run(options: RunOptions, launch: Launch): Promise<number> {
  // Validate kernel, initrd and command line before opening KVM, so bad input is reported the same on
  // hosts without KVM. A multiboot kernel's command line starts with its path, as QEMU and GRUB pass
  // it; a Linux kernel gets exactly --cmdline, as QEMU's -append.
  tracePhase(`modules loaded (node started at +${performance.nodeTiming.nodeStart.toFixed(1)}, bootstrapped at +${performance.nodeTiming.bootstrapComplete.toFixed(1)})`);
  const image = readKernelFile(options.kernel, {
    decompress: options.kernelDecompress,
    onNotice: (message) => process.stderr.write(`tsvmm: ${message}\n`),
  });
  tracePhase('kernel file read and parsed');
  const cmdline = image.kind === 'linux' ? options.cmdline
    : options.cmdline === '' ? options.kernel : `${options.kernel} ${options.cmdline}`;
  const boot: CheckedBoot = {
    cmdline,
    plan: planBoot({ kernelPath: options.kernel, initrdPath: options.initrd, cmdline, memBytes: options.memBytes, cpus: options.cpus }, image),
  };
  // Disks and NICs too: a missing image or a taken port is a usage error before any VM exists.
  tracePhase('boot planned');
  const virtio = options.devices.length === 0 ? [] : await (await import('./device-options.js')).openDevices(options.devices);
  const closeDevices = () => Promise.allSettled(virtio.map((d) => d.backend.close()));
  // Claim the incoming port before building the VM: a port in use is then an error at once, and a
  // source may connect (into the backlog) while the VM is still being built.
  let listener: IncomingListener | undefined;
  try {
    if (options.incoming !== undefined && options.incoming !== 'defer') {
      listener = await (await import('../migration/transport.js')).listenForMigration(options.incoming);
    }
  } catch (e) {
    await closeDevices();
    throw e;
  }
  try {
    return await runWith(options, boot, listener, virtio, closeDevices, launch);
  } finally {
    listener?.close();
  }
}

async function runWith(
  options: RunOptions, boot: CheckedBoot, listener: IncomingListener | undefined, virtio: VirtioDeviceSpec[], closeDevices: () => Promise<unknown>, launch: Launch,
): Promise<number> {
  const serialOutputFd = options.serial.kind === 'stdio' ? 1 : openSerialFile(options.serial.path);
  const testOnly = testOnlySwitches();
  let vm: Vm;
  try {
    vm = createVm(options, boot, serialOutputFd, { skipSyncBeforeDelete: testOnly.skipSyncBeforeDelete, unmarkedLoader: testOnly.unmarkedLoader }, virtio, launch);
    tracePhase('VM created');
  } catch (e) {
    await closeDevices();
    throw e;
  }
  // The controller serves QMP and migrations; a VM with neither just runs until its guest stops.
  let controller: VmController | undefined;
  try {
    if (options.qmp !== undefined || options.incoming !== undefined) {
      const { VmController } = await import('../machine/vm-controller.js');
      controller = new VmController(vm, options.incoming !== undefined, { churnMemslots: testOnly.churnMemslots, resumeOnLoaded: testOnly.resumeOnLoaded }, options.tlsCreds);
    }
  } catch (e) {
    vm.dispose();
    await closeDevices();
    throw e;
  }
  let qmp: QmpServer | undefined;
  let signalStatus: number | undefined;
  const onSignal = (status: number) => () => {
    signalStatus ??= status;
    void vm.stop();
    void controller?.quit();
  };
  const onInt = onSignal(ExitStatus.SIGINT);
  const onTerm = onSignal(ExitStatus.SIGTERM);
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const onInput = (chunk: Buffer) => { vm.serialInput(chunk); };
  if (options.serial.kind === 'stdio') {
    process.stdin.on('data', onInput);
    process.stdin.on('error', () => { /* no console input: the guest just sees none */ });
  }
  try {
    if (options.qmp !== undefined) qmp = await (await import('../control/qmp-server.js')).QmpServer.listen(options.qmp, controller!);
    if (options.incoming === undefined) {
      vm.start();
      tracePhase('vCPU threads started');
    } else {
      vm.startParked();
      tracePhase('vCPU threads started parked');
      if (listener !== undefined) {
        process.stderr.write(`tsvmm: waiting for an incoming migration on ${options.incoming}\n`);
        void controller!.receive(listener);
      }
    }
    const end = await Promise.race([
      vm.stopped.then((stop) => ({ kind: 'stopped' as const, stop })),
      controller?.ended ?? new Promise<never>(() => {}),
    ]);
    tracePhase(`VM ended (${end.kind})`);
    if (signalStatus !== undefined) return signalStatus;
    switch (end.kind) {
      case 'stopped': {
        const { status, note } = stopStatus(end.stop);
        if (note !== undefined) process.stderr.write(`tsvmm: ${note}\n`);
        return status;
      }
      case 'quit':
        return ExitStatus.OK;
      case 'migrated':
        // Let a `tsvmm migrate` polling QMP read the final figures before the socket goes.
        await qmp?.close({ graceMs: 2_000 });
        process.stderr.write(`tsvmm: the VM now runs at ${end.uri}; exiting\n`);
        return ExitStatus.OK;
      default: // 'incoming-failed'
        process.stderr.write(`tsvmm: incoming migration failed: ${end.message}\n`);
        return ExitStatus.MIGRATION_FAILED;
    }
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    process.stdin.off('data', onInput);
    process.stdin.pause();
    process.stdin.unref?.();
    await qmp?.close();
    await vm.stop();
    await vm.closeDevices();
    vm.dispose();
    tracePhase('VM disposed');
  }
}

/**
 * Switches that exist so the safety tests can show a failure being caught; read from the environment
 * so no user stumbles on them, and announced on stderr whenever one is set.
 *   TSVMM_TEST_ONLY_SKIP_SYNC_BEFORE_DELETE=1  invariant A off: memslots go without a dirty-log fetch
 *   TSVMM_TEST_ONLY_CHURN_MEMSLOTS=1           split and merge memslots throughout an outgoing migration
 *   TSVMM_TEST_ONLY_RESUME_ON_LOADED=1         as a destination, run the guest without the source's COMMIT
 *   TSVMM_TEST_ONLY_UNMARKED_LOADER=1          as a destination, leave the kernel loader's writes unmarked
 *                                              while still trusting the marks (Vm.ramZeroUnlessMarked)
 */
function testOnlySwitches(): { skipSyncBeforeDelete: boolean; churnMemslots: boolean; resumeOnLoaded: boolean; unmarkedLoader: boolean } {
  const on = (name: string) => process.env[name] === '1';
  const switches = {
    skipSyncBeforeDelete: on('TSVMM_TEST_ONLY_SKIP_SYNC_BEFORE_DELETE'),
    churnMemslots: on('TSVMM_TEST_ONLY_CHURN_MEMSLOTS'),
    resumeOnLoaded: on('TSVMM_TEST_ONLY_RESUME_ON_LOADED'),
    unmarkedLoader: on('TSVMM_TEST_ONLY_UNMARKED_LOADER'),
  };
  for (const [name, value] of Object.entries(switches)) {
    if (value) process.stderr.write(`tsvmm: WARNING: test-only switch ${name} is on; this VM is not safe to migrate\n`);
  }
  return switches;
}

function openSerialFile(file: string): number {
  try {
    return openSync(file, 'w');
  } catch (e) {
    throw new UsageError(`--serial file:${file}: ${(e as Error).message}`);
  }
}

/** What bin/tsvmm.cjs prepared before loading the CLI. */
export interface Launch {
  /** The first vCPU thread, already starting (only for `run`). */
  readonly prestartedVcpuThread?: PrestartedThread;
}

/** Runs the command line; returns the exit status. Errors are one line on stderr. */
export async function main(argv: string[], launch: Launch = {}): Promise<number> {
  try {
    const [command, ...rest] = argv;
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      (command === undefined ? process.stderr : process.stdout).write(USAGE);
      return command === undefined ? ExitStatus.USAGE : ExitStatus.OK;
    }
    if (command === '--version' || command === '-V') {
      process.stdout.write(`tsvmm ${version()}\n`);
      return ExitStatus.OK;
    }
    if (command === 'migrate') return await (await import('./migrate-command.js')).migrateCommand(rest);
    if (command !== 'run') throw new UsageError(`unknown command '${command}'`);
    const options = await parseRun(rest);
    if (options === 'help') {
      process.stdout.write(USAGE);
      return ExitStatus.OK;
    }
    return await run(options, launch);
  } catch (e) {
    process.stderr.write(`tsvmm: ${describe(e)}\n`);
    if (e instanceof UsageError) {
      process.stderr.write(`Try 'tsvmm --help' for more information.\n`);
      return ExitStatus.USAGE;
    }
    if (e instanceof BootError || e instanceof VmConfigError || isInputError(e)) return ExitStatus.USAGE;
    if (e instanceof KvmUnavailableError || e instanceof GuestMemoryAllocationError) return ExitStatus.HOST;
    return ExitStatus.GUEST_CRASH;
  }
}

function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if (e instanceof UsageError || e instanceof BootError || e instanceof VmConfigError || e instanceof KvmUnavailableError || isInputError(e)) return e.message;
  // Unexpected: keep the cause chain, which says which system call failed.
  let text = e.message;
  for (let c = e.cause; c instanceof Error; c = c.cause) text += `: ${c.message}`;
  return text;
}

/**
 * The errors of the lazily imported rooms that mean the user's input was wrong (a disk image, a
 * network backend, an address, a port, TLS credentials): one line, usage status. Matched by name so
 * that main does not import those rooms to test instanceof; test/unit/cli/input-errors.test.ts checks
 * each name against its class.
 */
export const INPUT_ERROR_NAMES: ReadonlySet<string> = new Set([
  'DeviceOptionError', 'DiskError', 'NetError', 'MigrationTransportError', 'QmpListenError', 'AddressError', 'TlsCredsError',
]);

function isInputError(e: unknown): boolean {
  return e instanceof Error && INPUT_ERROR_NAMES.has(e.name);
}
