/**
 * The QMP commands tsvmm answers: each one's parameters, checked with QEMU's messages before it runs,
 * and what it asks of the VmControl. Every refusal is a CommandError, which the server answers as
 * `{"error": {"class", "desc"}}`.
 */
import { VmControlError, type MigrationParameters, type VmControl } from './vm-control.js';

export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive';

/** A refused request, answered as `{"error": {"class", "desc"}}`; never leaves this file (the server sees only errorBody). */
class CommandError extends Error {
  constructor(message: string, readonly qmpClass: QmpErrorClass = 'GenericError') {
    super(message);
  }
}

// Argument checking, with QEMU's messages (qapi/qobject-input-visitor.c), so scripts see the same text.

type ParamType = 'str' | 'bool' | 'uint' | 'str-list' | 'caps-list';
interface ParamSpec { type: ParamType; optional?: boolean }
type Args = Record<string, unknown>;

const TYPE_LABEL: Record<ParamType, string> = { str: 'string', bool: 'boolean', uint: 'uint64', 'str-list': 'array', 'caps-list': 'array' };

function typeMismatch(name: string, type: ParamType | 'object'): CommandError {
  return new CommandError(`Invalid parameter type for '${name}', expected: ${type === 'object' ? 'object' : TYPE_LABEL[type]}`);
}

export function isPlainObject(v: unknown): v is Args {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkValue(name: string, type: ParamType, v: unknown): void {
  switch (type) {
    case 'str': if (typeof v !== 'string') throw typeMismatch(name, type); return;
    case 'bool': if (typeof v !== 'boolean') throw typeMismatch(name, type); return;
    case 'uint': if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw typeMismatch(name, type); return;
    case 'str-list':
      if (!Array.isArray(v)) throw typeMismatch(name, type);
      v.forEach((e, i) => checkValue(`${name}[${i}]`, 'str', e));
      return;
    case 'caps-list':
      if (!Array.isArray(v)) throw typeMismatch(name, type);
      v.forEach((e, i) => checkArgs(e, { capability: { type: 'str' }, state: { type: 'bool' } }, `${name}[${i}].`));
      return;
  }
}

/** Throws the first problem QEMU would report: a missing, mistyped or unexpected parameter. */
function checkArgs(args: unknown, spec: Record<string, ParamSpec>, prefix = ''): asserts args is Args {
  if (!isPlainObject(args)) throw typeMismatch(prefix.replace(/\.$/, ''), 'object');
  for (const [name, p] of Object.entries(spec)) {
    if (!Object.hasOwn(args, name)) {
      if (!p.optional) throw new CommandError(`Parameter '${prefix}${name}' is missing`);
      continue;
    }
    checkValue(prefix + name, p.type, args[name]);
  }
  for (const name of Object.keys(args)) {
    if (!Object.hasOwn(spec, name)) throw new CommandError(`Parameter '${prefix}${name}' is unexpected`);
  }
}

// ---------------------------------------------------------------------------------------------
// The command table. Each entry checks nothing itself: `params` is checked before `run` is called.

/** What a command may ask of the connection it came on. */
export interface QmpSession { readonly negotiated: boolean; readonly server: { readonly version: unknown } }
export interface QmpCommand {
  params: Record<string, ParamSpec>;
  run(args: Args, control: VmControl, session: QmpSession): unknown;
}

const MIGRATION_PARAMETER_TYPES: Record<keyof MigrationParameters, ParamSpec> = {
  'downtime-limit': { type: 'uint', optional: true },
  'max-bandwidth': { type: 'uint', optional: true },
  'multifd-channels': { type: 'uint', optional: true },
  'x-verify': { type: 'bool', optional: true },
  'tls-creds': { type: 'str', optional: true },
  'tls-hostname': { type: 'str', optional: true },
  'x-peer-timeout': { type: 'uint', optional: true },
};

const COMMANDS: ReadonlyMap<string, QmpCommand> = new Map<string, QmpCommand>([
  ['qmp_capabilities', {
    params: { enable: { type: 'str-list', optional: true } },
    run: (args, _control, session) => {
      if (session.negotiated) throw new CommandError('Capabilities negotiation is already complete, command ignored', 'CommandNotFound');
      // The greeting offers no capability (no OOB), so there is none a client may enable.
      const wanted = (args.enable as string[] | undefined) ?? [];
      if (wanted.length > 0) throw new CommandError(`Capability '${wanted[0]}' not available`);
      return {};
    },
  }],
  ['query-status', {
    params: {},
    run: (_a, control) => {
      const status = control.runState();
      return { running: status === 'running', singlestep: false, status };
    },
  }],
  ['stop', { params: {}, run: async (_a, control) => { await control.stop(); return {}; } }],
  ['cont', { params: {}, run: (_a, control) => { control.cont(); return {}; } }],
  // `quit` is answered before it runs (see Connection.dispatch); this entry only lists and checks it.
  ['quit', { params: {}, run: () => ({}) }],
  ['migrate', {
    // QEMU 7.2's arguments, for its scripts: detach is ignored (QMP's migrate is always detached, as in
    // QEMU); blk/inc (block migration: copy the disks too) and resume (postcopy recovery) are taken
    // when false and refused when true, which ignored would leave the destination on another disk.
    params: {
      uri: { type: 'str' }, blk: { type: 'bool', optional: true }, inc: { type: 'bool', optional: true },
      detach: { type: 'bool', optional: true }, resume: { type: 'bool', optional: true },
    },
    run: (args, control) => {
      if (args.blk === true || args.inc === true) {
        throw new CommandError("tsvmm has no block migration ('blk', 'inc'): it moves RAM and device state only; give the destination the same disk images (shared storage), as QEMU's -incoming with shared disks");
      }
      if (args.resume === true) throw new CommandError("tsvmm has no postcopy, so no postcopy recovery ('resume')");
      control.migrate(args.uri as string);
      return {};
    },
  }],
  ['migrate-incoming', {
    params: { uri: { type: 'str' } },
    run: async (args, control) => { await control.migrateIncoming(args.uri as string); return {}; },
  }],
  ['query-migrate', { params: {}, run: (_a, control) => control.queryMigrate() }],
  ['migrate-set-capabilities', {
    params: { capabilities: { type: 'caps-list' } },
    run: (args, control) => {
      control.setMigrationCapabilities(args.capabilities as { capability: string; state: boolean }[]);
      return {};
    },
  }],
  ['query-migrate-capabilities', { params: {}, run: (_a, control) => control.migrationCapabilities() }],
  ['migrate-set-parameters', {
    params: MIGRATION_PARAMETER_TYPES,
    run: (args, control) => { control.setMigrationParameters(args as Partial<MigrationParameters>); return {}; },
  }],
  ['query-migrate-parameters', { params: {}, run: (_a, control) => control.migrationParameters() }],
  ['migrate_cancel', { params: {}, run: (_a, control) => { control.migrateCancel(); return {}; } }],
  ['query-commands', { params: {}, run: () => [...COMMANDS.keys()].map((name) => ({ name })) }],
  ['query-version', { params: {}, run: (_a, _c, session) => session.server.version }],
]);

/** The command names the server answers, for query-commands and for tests. */
export const QMP_COMMANDS: readonly string[] = [...COMMANDS.keys()];

/** The request's command and arguments, or the error QEMU gives (qapi/qmp-dispatch.c, qmp_dispatch_check_obj). */
function checkRequest(request: unknown): { name: string; args: unknown } {
  if (!isPlainObject(request)) throw new CommandError('QMP input must be a JSON object');
  for (const key of Object.keys(request)) {
    if (key !== 'execute' && key !== 'arguments' && key !== 'id') throw new CommandError(`QMP input member '${key}' is unexpected`);
  }
  if (!Object.hasOwn(request, 'execute')) throw new CommandError("QMP input lacks member 'execute'");
  if (typeof request.execute !== 'string') throw new CommandError("QMP input member 'execute' must be a string");
  if (Object.hasOwn(request, 'arguments') && !isPlainObject(request.arguments)) {
    throw new CommandError("QMP input member 'arguments' must be an object");
  }
  return { name: request.execute, args: request.arguments ?? {} };
}

/**
 * The command a request asks for, with its arguments checked, or the CommandError QEMU would answer:
 * a malformed request, any command but qmp_capabilities before negotiation, an unknown command, and
 * a missing, mistyped or unexpected argument, in that order.
 */
export function checkedCommand(request: unknown, negotiated: boolean): { name: string; command: QmpCommand; args: Args } {
  const { name, args } = checkRequest(request);
  // Before negotiation only qmp_capabilities exists, and QEMU says so instead of "not found".
  if (!negotiated && name !== 'qmp_capabilities') {
    throw new CommandError("Expecting capabilities negotiation with 'qmp_capabilities'", 'CommandNotFound');
  }
  const command = COMMANDS.get(name);
  if (command === undefined) throw new CommandError(`The command ${name} has not been found`, 'CommandNotFound');
  checkArgs(args, command.params);
  return { name, command, args };
}

/** The `{"class", "desc"}` of a failed command's error reply. */
export function errorBody(e: unknown): { class: QmpErrorClass; desc: string } {
  if (e instanceof CommandError || e instanceof VmControlError) return { class: e.qmpClass, desc: e.message };
  return { class: 'GenericError', desc: e instanceof Error ? e.message : String(e) };
}
