/**
 * Test doubles for the control plane: a VmControl that records calls and plays back scripted
 * query-migrate answers, and a raw socket client that sees exactly what the QMP server writes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  VmControlError,
  type MigrationCapabilityName,
  type MigrationInfo,
  type MigrationParameters,
  type RunState,
  type VmControl,
  type VmEvent,
} from '../../../src/control/vm-control.js';

export type Call = [method: string, ...args: unknown[]];

export class FakeVmControl implements VmControl {
  readonly calls: Call[] = [];
  state: RunState = 'running';
  /** query-migrate answers, one per call; the last one repeats. Set through play(). */
  private migrationScript: MigrationInfo[] = [{}];
  /** Makes the named method throw (or reject) this error. */
  readonly failures = new Map<string, Error>();
  /** When set, stop() waits for this promise: a command that takes its time. */
  stopGate: Promise<void> | undefined;
  /** Runs after migrateCancel is recorded (to script the cancelled outcome). */
  onCancel: (() => void) | undefined;
  params: MigrationParameters = { 'downtime-limit': 300, 'max-bandwidth': 0, 'multifd-channels': 2, 'x-verify': false };
  caps: { capability: MigrationCapabilityName; state: boolean }[] = [
    { capability: 'auto-converge', state: false },
    { capability: 'multifd', state: true },
  ];
  private readonly listeners = new Set<(e: VmEvent) => void>();
  private queries = 0;

  private record(method: string, ...args: unknown[]): void {
    this.calls.push([method, ...args]);
    const failure = this.failures.get(method);
    if (failure !== undefined) throw failure;
  }

  /** Scripts query-migrate from its next call on. */
  play(...infos: MigrationInfo[]): void {
    this.migrationScript = infos;
    this.queries = 0;
  }

  callNames(): string[] {
    return this.calls.map((c) => c[0]);
  }

  emit(e: VmEvent): void {
    for (const l of this.listeners) l(e);
  }

  listenerCount(): number {
    return this.listeners.size;
  }

  runState(): RunState {
    this.record('runState');
    return this.state;
  }
  async stop(): Promise<void> {
    this.record('stop');
    await this.stopGate;
    this.state = 'paused';
  }
  cont(): void {
    this.record('cont');
    this.state = 'running';
  }
  async quit(): Promise<void> {
    this.record('quit');
    this.state = 'shutdown';
  }
  migrate(uri: string): void {
    this.record('migrate', uri);
  }
  async migrateIncoming(uri: string): Promise<void> {
    this.record('migrateIncoming', uri);
  }
  migrateCancel(): void {
    this.record('migrateCancel');
    this.onCancel?.();
  }
  queryMigrate(): MigrationInfo {
    this.record('queryMigrate');
    const i = Math.min(this.queries++, this.migrationScript.length - 1);
    return this.migrationScript[i]!;
  }
  migrationParameters(): MigrationParameters {
    this.record('migrationParameters');
    return this.params;
  }
  setMigrationParameters(p: Partial<MigrationParameters>): void {
    this.record('setMigrationParameters', p);
    this.params = { ...this.params, ...p };
  }
  migrationCapabilities(): { capability: MigrationCapabilityName; state: boolean }[] {
    this.record('migrationCapabilities');
    return this.caps;
  }
  setMigrationCapabilities(caps: { capability: string; state: boolean }[]): void {
    this.record('setMigrationCapabilities', caps);
    for (const c of caps) {
      const known = this.caps.find((k) => k.capability === c.capability);
      if (known === undefined) throw new VmControlError(`Invalid parameter 'capability': unknown capability '${c.capability}'`);
      known.state = c.state;
    }
  }
  onEvent(listener: (e: VmEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** A ram block for scripted MigrationInfo. */
export function ram(over: Partial<NonNullable<MigrationInfo['ram']>> = {}): NonNullable<MigrationInfo['ram']> {
  return {
    transferred: 0, remaining: 0, total: 256 * 2 ** 20, duplicate: 0, normal: 0, 'normal-bytes': 0,
    'dirty-pages-rate': 0, mbps: 0, 'dirty-sync-count': 1, 'page-size': 4096, 'pages-per-second': 0,
    'precopy-bytes': 0, 'downtime-bytes': 0, ...over,
  };
}

/** A temp dir holding a socket path short enough for sun_path; removed by `cleanup`. */
export function tempSocketPath(name = 'qmp.sock'): { path: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-qmp-'));
  return { path: path.join(dir, name), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A bare socket to the server: writes raw text, reads the server's lines one parsed message at a time. */
export class RawClient {
  private readonly messages: unknown[] = [];
  private waiter: (() => void) | undefined;
  private buffered = '';
  ended = false;

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.buffered += text;
      let nl;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        this.messages.push(JSON.parse(this.buffered.slice(0, nl)));
        this.buffered = this.buffered.slice(nl + 1);
      }
      this.waiter?.();
    });
    socket.on('close', () => { this.ended = true; this.waiter?.(); });
    socket.on('error', () => {});
  }

  static connect(socketPath: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(socketPath, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  /** Connects, checks that a greeting came, and negotiates. */
  static async negotiated(socketPath: string): Promise<RawClient> {
    const c = await RawClient.connect(socketPath);
    await c.next();
    c.send({ execute: 'qmp_capabilities' });
    await c.next();
    return c;
  }

  send(message: unknown): void {
    this.socket.write(typeof message === 'string' ? message : JSON.stringify(message) + '\n');
  }

  /** Sends a command and returns the next message (its answer, when no event comes between). */
  async command(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.send(args === undefined ? { execute } : { execute, arguments: args });
    return this.next();
  }

  async next(timeoutMs = 2000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length === 0) {
      if (this.ended) throw new Error('connection closed with no message pending');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => { clearTimeout(t); resolve(); };
      });
      this.waiter = undefined;
    }
    return this.messages.shift() as Record<string, unknown>;
  }

  /** Waits for the server to close this connection. */
  async closed(timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  pending(): number {
    return this.messages.length;
  }

  close(): void {
    this.socket.destroy();
  }
}
