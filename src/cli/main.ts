import { openSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BootError } from '../boot/boot-error.js';
import { packageRoot } from '../kvm/addon.js';
import { KvmUnavailableError } from '../kvm/kvm.js';
import { Vm, VmConfigError, readKernel } from '../machine/vm.js';
import type { VcpuStop } from '../vcpu/exit-handler.js';
import { ExitStatus } from './exit-status.js';
import { formatBytes, parseMemorySize } from './parse-size.js';
import { USAGE } from './usage.js';

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
  memBytes: number;
  cpus: number;
  cmdline: string;
  serial: { kind: 'stdio' } | { kind: 'file'; path: string };
  kvmPath: string;
}

function parseRun(args: string[]): RunOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        mem: { type: 'string', default: '256M' },
        cpus: { type: 'string', default: '1' },
        cmdline: { type: 'string', default: '' },
        serial: { type: 'string', default: 'stdio' },
        kvm: { type: 'string', default: '/dev/kvm' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  if (positionals.length === 0) throw new UsageError('run: missing KERNEL (a multiboot kernel file, e.g. guests/build/hello.elf)');
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
  let serial: RunOptions['serial'];
  if (values.serial === 'stdio') serial = { kind: 'stdio' };
  else if (values.serial.startsWith('file:') && values.serial.length > 5) serial = { kind: 'file', path: values.serial.slice(5) };
  else throw new UsageError(`--serial: '${values.serial}' is neither 'stdio' nor 'file:PATH'`);
  return { kernel: positionals[0]!, memBytes, cpus: Number(values.cpus), cmdline: values.cmdline, serial, kvmPath: values.kvm };
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

async function run(options: RunOptions): Promise<number> {
  // Validate the kernel before opening KVM, so bad input is reported the same on hosts without KVM.
  readKernel(options.kernel);
  const serialOutputFd = options.serial.kind === 'stdio' ? 1 : openSerialFile(options.serial.path);
  const vm = Vm.create({
    kernelPath: options.kernel,
    memBytes: options.memBytes,
    cpus: options.cpus,
    // The kernel path comes first, as QEMU and GRUB pass it.
    cmdline: options.cmdline === '' ? options.kernel : `${options.kernel} ${options.cmdline}`,
    serialOutputFd,
    kvmPath: options.kvmPath,
  });
  let signalStatus: number | undefined;
  const onSignal = (status: number) => () => {
    signalStatus ??= status;
    void vm.stop();
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
    vm.start();
    const stop = await vm.stopped;
    if (signalStatus !== undefined) return signalStatus;
    const { status, note } = stopStatus(stop);
    if (note !== undefined) process.stderr.write(`tsvmm: ${note}\n`);
    return status;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    process.stdin.off('data', onInput);
    process.stdin.pause();
    process.stdin.unref?.();
    vm.dispose();
  }
}

function openSerialFile(file: string): number {
  try {
    return openSync(file, 'w');
  } catch (e) {
    throw new UsageError(`--serial file:${file}: ${(e as Error).message}`);
  }
}

/** Runs the command line; returns the exit status. Errors are one line on stderr. */
export async function main(argv: string[]): Promise<number> {
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
    if (command !== 'run') throw new UsageError(`unknown command '${command}'`);
    const options = parseRun(rest);
    if (options === 'help') {
      process.stdout.write(USAGE);
      return ExitStatus.OK;
    }
    return await run(options);
  } catch (e) {
    process.stderr.write(`tsvmm: ${describe(e)}\n`);
    if (e instanceof UsageError) {
      process.stderr.write(`Try 'tsvmm --help' for more information.\n`);
      return ExitStatus.USAGE;
    }
    if (e instanceof BootError || e instanceof VmConfigError) return ExitStatus.USAGE;
    if (e instanceof KvmUnavailableError) return ExitStatus.HOST;
    return ExitStatus.GUEST_CRASH;
  }
}

function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if (e instanceof UsageError || e instanceof BootError || e instanceof VmConfigError || e instanceof KvmUnavailableError) return e.message;
  // Unexpected: keep the cause chain, which says which system call failed.
  let text = e.message;
  for (let c = e.cause; c instanceof Error; c = c.cause) text += `: ${c.message}`;
  return text;
}
