/**
 * STATE records: one named piece of VM state ("vm", "vcpu0", "uart", ...) in the migration stream
 * (protocol.ts), its byte arrays carried as bytes rather than inside the JSON.
 */
import { MigrationStreamError, RECORD_HEADER_BYTES, RecordType, record } from './protocol.js';

/**
 * A STATE record: u16 name length, the name, u32 JSON length, the state as JSON with each byte array
 * (Uint8Array) replaced by {"$bytes": i}, then u32 count and, for each array i, u32 length and its
 * bytes. Binary state goes as it is: as base64 inside the JSON (version 3), encoding one VM's state
 * took 3.5-21 ms and parsing it 2.8-15 ms in nested KVM, against 1.7-10 ms for capturing it, all of it
 * downtime.
 */
export function stateRecord(name: string, state: unknown): Buffer {
  const arrays: Uint8Array[] = [];
  const json = JSON.stringify(replaceByteArrays(state, (a) => ({ $bytes: arrays.push(a) - 1 })));
  const nameBytes = Buffer.from(name);
  const jsonBytes = Buffer.byteLength(json);
  const p = Buffer.allocUnsafe(2 + nameBytes.length + 4 + jsonBytes + 4 + arrays.reduce((n, a) => n + 4 + a.length, 0));
  let at = p.writeUInt16LE(nameBytes.length, 0);
  at += nameBytes.copy(p, at);
  at = p.writeUInt32LE(jsonBytes, at);
  at += p.write(json, at);
  at = p.writeUInt32LE(arrays.length, at);
  for (const a of arrays) {
    at = p.writeUInt32LE(a.length, at);
    p.set(a, at);
    at += a.length;
  }
  return record(RecordType.STATE, p);
}

/**
 * A STATE record encoded once, from `sample`, with `state` a copy of the sample whose byte arrays are
 * views into the record's own bytes: reading new state into those arrays in place
 * (captureVcpuStateInto, captureVmKernelStateInto) leaves `record` equal to stateRecord(name, state)
 * with nothing left to encode. A switch-over builds its templates before it pauses the guest and
 * fills them in the pause: on kvm_pvm, cold, encoding the VM's and a vCPU's pieces took ~0.05 ms of
 * the downtime, and their capture into fresh arrays ~0.08 ms more than into these (medians of 25).
 * INVARIANT: only the arrays' contents change, never their lengths nor any other field of `state`.
 */
export function stateRecordTemplate<T>(name: string, sample: T): { readonly record: Buffer; readonly state: T } {
  const record = stateRecord(name, sample);
  const views = stateParts(record.subarray(RECORD_HEADER_BYTES)).arrays;
  let next = 0;
  // The same walk as stateRecord's, so the i-th array met is the record's i-th.
  return { record, state: replaceByteArrays(sample, () => views[next++]) as T };
}

/**
 * `value` with every Uint8Array in it replaced by what `replace` gives for it, the arrays met in one
 * fixed order (depth first, keys in their own order): stateRecord's and stateRecordTemplate's walk.
 */
function replaceByteArrays(value: unknown, replace: (array: Uint8Array) => unknown): unknown {
  if (value instanceof Uint8Array) return replace(value);
  if (Array.isArray(value)) return value.map((v) => replaceByteArrays(v, replace));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = replaceByteArrays(v, replace);
    return out;
  }
  return value;
}

/** The reverse of stateRecord's {$bytes: i} placeholders; each array is copied out of the record (whose bytes are reused). */
function withByteArrays(value: unknown, arrays: readonly Buffer[]): unknown {
  if (Array.isArray(value)) return value.map((v) => withByteArrays(v, arrays));
  if (value !== null && typeof value === 'object') {
    const index = (value as { $bytes?: unknown }).$bytes;
    if (index !== undefined) {
      if (typeof index !== 'number' || arrays[index] === undefined) throw new MigrationStreamError(`STATE record names byte array ${String(index)}, which it does not carry`);
      return new Uint8Array(arrays[index]!);
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = withByteArrays(v, arrays);
    return out;
  }
  return value;
}

export function parseState(payload: Buffer): { name: string; state: unknown } {
  const { name, jsonText, arrays } = stateParts(payload);
  let parsed: unknown;
  try {
    parsed = JSON.parse(jsonText);
  } catch {
    throw new MigrationStreamError(`STATE record "${name}" is not valid JSON`);
  }
  return { name, state: withByteArrays(parsed, arrays) };
}

/** A STATE record's payload cut into its name, its JSON text and its byte arrays (views of `payload`), checked for length. */
function stateParts(payload: Buffer): { name: string; jsonText: string; arrays: Buffer[] } {
  const truncated = (what: string) => new MigrationStreamError(`STATE record cut short in its ${what}`);
  if (payload.length < 2) throw truncated('name');
  const nameLength = payload.readUInt16LE(0);
  let at = 2 + nameLength;
  if (at + 4 > payload.length) throw truncated('name');
  const name = payload.subarray(2, at).toString();
  const jsonLength = payload.readUInt32LE(at);
  at += 4;
  if (at + jsonLength + 4 > payload.length) throw new MigrationStreamError(`STATE record "${name}" cut short in its JSON`);
  const jsonText = payload.subarray(at, at + jsonLength).toString();
  at += jsonLength;
  const count = payload.readUInt32LE(at);
  at += 4;
  const arrays: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > payload.length) throw new MigrationStreamError(`STATE record "${name}" cut short in its byte arrays`);
    const length = payload.readUInt32LE(at);
    at += 4;
    if (at + length > payload.length) throw new MigrationStreamError(`STATE record "${name}" cut short in its byte arrays`);
    arrays.push(payload.subarray(at, at + length));
    at += length;
  }
  if (at !== payload.length) throw new MigrationStreamError(`STATE record "${name}" is longer than its contents`);
  return { name, jsonText, arrays };
}
