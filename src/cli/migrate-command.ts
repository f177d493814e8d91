/**
 * `tsvmm migrate`: drives a live migration of a running tsvmm through its QMP socket, as one would
 * with QEMU's `migrate` + `query-migrate`, and reports how it went through the exit status.
 */
import { parseArgs } from 'node:util';
import { AddressError, parseSocketAddress } from '../control/qmp-address.js';
import { QmpClient, QmpConnectionError, QmpError } from '../control/qmp-client.js';
import type { MigrationInfo, MigrationParameters } from '../control/vm-control.js';
import { ExitStatus } from './exit-status.js';
import { ProgressLine, formatProgress, formatSummary, type TextOutput } from './progress.js';

const { MIGRATION_FAILED, MIGRATION_CANCELLED, CONTROL_UNREACHABLE } = ExitStatus;

const DEFAULT_INTERVAL_MS = 200;
/** Connecting and each command; a VM whose QMP does not answer in this time is taken as hung. */
const QMP_TIMEOUT_MS = 5_000;

export const MIGRATE_USAGE = `Usage: tsvmm migrate --qmp unix:PATH|tcp:HOST:PORT [options] tcp:HOST:PORT

Live-migrates the tsvmm listening on --qmp to the destination tcp:HOST:PORT (a tsvmm started
with --incoming). Progress goes to stderr; the result to stdout.

Options:
  --qmp ADDRESS           the source VM's QMP socket (its --qmp)                 [required]
  --downtime-limit MS     the longest pause allowed at switch-over               [VM default: 300]
  --max-bandwidth RATE    bytes/s, with K, M or G (binary: 100M = 100 MiB/s)     [VM default: unlimited]
  --verify                hash guest RAM on both sides at switch-over; the destination refuses a mismatch
  --tls-creds ID          run the stream over TLS with the source's tls-creds-x509 object ID
                          (its --object); the destination needs its own, endpoint=server
  --multifd-channels N    send RAM over N more connections from N worker threads (capability multifd)
  --tls-hostname NAME     the name the destination's certificate must carry     [default: HOST]
  --peer-timeout MS       a destination that acknowledges nothing for this long  [VM default: 30000]
                          (its host died, or dropped off the network) fails the
                          migration, and the guest runs on here; 0: TCP's own
  --interval MS           how often to poll query-migrate                        [default: ${DEFAULT_INTERVAL_MS}]
  --json                  no progress; print the final query-migrate answer as JSON
  -h, --help              show this help

Ctrl-C cancels the migration (migrate_cancel) and waits until the VM confirms; a second Ctrl-C
stops waiting.

Exit status:
  0 completed, 2 bad usage, ${MIGRATION_FAILED} failed (or refused by the VM), ${MIGRATION_CANCELLED} cancelled,
  ${CONTROL_UNREACHABLE} no QMP at the address or connection lost, 130 on a second Ctrl-C.
`;

class UsageError extends Error {
  override name = 'UsageError';
}

interface MigrateOptions {
  qmp: string;
  destination: string;
  parameters: Partial<MigrationParameters>;
  /** migrate-set-capabilities to send first (multifd when --multifd-channels is given). */
  capabilities: { capability: string; state: boolean }[];
  json: boolean;
  intervalMs: number;
}

/** Where the command writes and how it hears Ctrl-C; tests pass their own. */
export interface MigrateIo {
  stdout: TextOutput;
  stderr: TextOutput;
  /** Calls `handler` on each interrupt until the returned function is called. */
  onInterrupt(handler: () => void): () => void;
}

const processIo: MigrateIo = {
  stdout: process.stdout,
  stderr: process.stderr,
  onInterrupt(handler) {
    process.on('SIGINT', handler);
    return () => process.off('SIGINT', handler);
  },
};

const RATE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Parses a rate in bytes/s: a number with an optional binary K/M/G/T suffix (`100M`, `1.5GiB/s`); a bare number is bytes/s. */
export function parseBandwidth(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?(?:\/s)?\s*$/i.exec(text);
  if (m === null) throw new RangeError(`cannot parse rate '${text}': use bytes/s with K, M or G (e.g. 100M)`);
  const bytes = Number(m[1]) * RATE_UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`rate '${text}' is not a whole number of bytes/s`);
  return bytes;
}

function wholeNumber(option: string, text: string, min: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`${option}: '${text}' is not a whole number${min > 0 ? ` of at least ${min}` : ''}`);
  }
  return Number(text);
}

export function parseMigrateArgs(argv: string[]): MigrateOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        qmp: { type: 'string' },
        'downtime-limit': { type: 'string' },
        'max-bandwidth': { type: 'string' },
        verify: { type: 'boolean' },
        'tls-creds': { type: 'string' },
        'multifd-channels': { type: 'string' },
        'tls-hostname': { type: 'string' },
        'peer-timeout': { type: 'string' },
        json: { type: 'boolean' },
        interval: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]!);
  }
  const { values, positionals } = parsed;
  if (values.help === true) return 'help';
  if (values.qmp === undefined) throw new UsageError('missing --qmp unix:PATH|tcp:HOST:PORT (the source VM\'s QMP socket)');
  checkAddress('--qmp', values.qmp);
  if (positionals.length === 0) throw new UsageError('missing the destination tcp:HOST:PORT');
  if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
  const destination = positionals[0]!;
  if (checkAddress('destination', destination).kind !== 'tcp') throw new UsageError(`destination '${destination}' is not tcp:HOST:PORT`);
  const parameters: Partial<MigrationParameters> = {};
  if (values['downtime-limit'] !== undefined) parameters['downtime-limit'] = wholeNumber('--downtime-limit', values['downtime-limit'], 1);
  if (values['max-bandwidth'] !== undefined) {
    try {
      parameters['max-bandwidth'] = parseBandwidth(values['max-bandwidth']);
    } catch (e) {
      throw new UsageError(`--max-bandwidth: ${(e as Error).message}`);
    }
  }
  if (values.verify === true) parameters['x-verify'] = true;
  if (values['tls-creds'] !== undefined) parameters['tls-creds'] = values['tls-creds'];
  if (values['tls-hostname'] !== undefined) parameters['tls-hostname'] = values['tls-hostname'];
  if (values['peer-timeout'] !== undefined) parameters['x-peer-timeout'] = wholeNumber('--peer-timeout', values['peer-timeout'], 0);
  const capabilities: MigrateOptions['capabilities'] = [];
  if (values['multifd-channels'] !== undefined) {
    parameters['multifd-channels'] = wholeNumber('--multifd-channels', values['multifd-channels'], 1);
    capabilities.push({ capability: 'multifd', state: true });
  }
  const intervalMs = values.interval === undefined ? DEFAULT_INTERVAL_MS : wholeNumber('--interval', values.interval, 1);
  return { qmp: values.qmp, destination, parameters, capabilities, json: values.json === true, intervalMs };
}

function checkAddress(what: string, text: string) {
  try {
    return parseSocketAddress(text);
  } catch (e) {
    if (e instanceof AddressError) throw new UsageError(`${what}: ${e.message}`);
    throw e;
  }
}

/** Runs `tsvmm migrate ARGV`; returns the exit status. Every failure is one line on stderr. */
export async function migrateCommand(argv: string[], io: MigrateIo = processIo): Promise<number> {
  let options;
  try {
    options = parseMigrateArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr.write(`tsvmm: migrate: ${e.message} (see 'tsvmm migrate --help')\n`);
    return ExitStatus.USAGE;
  }
  if (options === 'help') {
    io.stdout.write(MIGRATE_USAGE);
    return ExitStatus.OK;
  }
  let client: QmpClient;
  try {
    client = await QmpClient.connect(options.qmp, { timeoutMs: QMP_TIMEOUT_MS });
  } catch (e) {
    io.stderr.write(`tsvmm: ${(e as Error).message}\n`);
    return CONTROL_UNREACHABLE;
  }
  try {
    return await migrate(client, options, io);
  } catch (e) {
    // A refused command (QmpError) means the migration never started: that is a failed migration.
    if (e instanceof QmpError) {
      io.stderr.write(`tsvmm: migration failed: ${e.desc}\n`);
      return MIGRATION_FAILED;
    }
    io.stderr.write(`tsvmm: ${(e as Error).message}\n`);
    return e instanceof QmpConnectionError ? CONTROL_UNREACHABLE : MIGRATION_FAILED;
  } finally {
    client.close();
  }
}

async function migrate(client: QmpClient, options: MigrateOptions, io: MigrateIo): Promise<number> {
  if (Object.keys(options.parameters).length > 0) await client.execute('migrate-set-parameters', options.parameters);
  if (options.capabilities.length > 0) await client.execute('migrate-set-capabilities', { capabilities: options.capabilities });

  // A source that completed may exit at once, closing QMP before our next query-migrate. Its
  // MIGRATION event says `completed` first, so that is remembered, with the last progress seen.
  let completedEvent = false;
  let last: MigrationInfo = {};
  client.on('event', (e) => { if (e.event === 'MIGRATION' && e.data?.status === 'completed') completedEvent = true; });
  const progress = new ProgressLine(io.stderr);
  let interrupts = 0;
  let giveUp!: () => void;
  const gaveUp = new Promise<'gave-up'>((resolve) => { giveUp = () => resolve('gave-up'); });
  // Installed before `migrate` is sent: a Ctrl-C right after it must cancel, not kill us and leave
  // the migration running unwatched. QMP runs one connection's commands in order, so a
  // migrate_cancel sent now reaches the VM after the migrate.
  const stopListening = io.onInterrupt(() => {
    if (++interrupts === 1) {
      progress.end();
      io.stderr.write('tsvmm: cancelling the migration (Ctrl-C again to stop waiting)\n');
      client.execute('migrate_cancel').catch(() => { /* the next query-migrate reports the outcome */ });
    } else {
      giveUp();
    }
  });
  try {
    await client.execute('migrate', { uri: options.destination });
    for (;;) {
      let info;
      try {
        info = await Promise.race([client.execute<MigrationInfo>('query-migrate'), gaveUp]);
      } catch (e) {
        if (!(e instanceof QmpConnectionError && completedEvent)) throw e;
        progress.end();
        io.stderr.write('tsvmm: the source closed QMP right after completing; figures are from the last poll\n');
        return report({ ...last, status: 'completed' }, options, io);
      }
      if (info === 'gave-up') break;
      last = info;
      if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') {
        progress.end();
        return report(info, options, io);
      }
      if (!options.json) progress.update(formatProgress(info));
      if ((await Promise.race([sleep(options.intervalMs), gaveUp])) === 'gave-up') break;
    }
    progress.end();
    io.stderr.write('tsvmm: stopped waiting; the migration may still be cancelling (see query-migrate)\n');
    return ExitStatus.SIGINT;
  } finally {
    stopListening();
  }
}

function report(info: MigrationInfo, options: MigrateOptions, io: MigrateIo): number {
  if (options.json) io.stdout.write(`${JSON.stringify(info)}\n`);
  switch (info.status) {
    case 'completed':
      if (!options.json) io.stdout.write(`${formatSummary(info)}\n`);
      return ExitStatus.OK;
    case 'cancelled':
      io.stderr.write('tsvmm: migration cancelled\n');
      return MIGRATION_CANCELLED;
    default:
      io.stderr.write(`tsvmm: migration failed: ${info['error-desc'] ?? 'no reason given'}\n`);
      return MIGRATION_FAILED;
  }
}

function sleep(ms: number): Promise<'slept'> {
  return new Promise((resolve) => setTimeout(() => resolve('slept'), ms));
}
