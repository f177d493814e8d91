import { EventEmitter } from 'node:events';
import {
  VmControlError, type MigrationCapabilityName, type MigrationInfo, type MigrationParameters,
  type RunState, type VmControl, type VmEvent,
} from '../control/vm-control.js';
import { RECORD_HEADER_BYTES } from '../migration/protocol.js';
import { parseState, stateRecord } from '../migration/state-record.js';
import { receiveMigration, rehearseTailDecoding } from '../migration/incoming.js';
import { MultifdChannels } from '../migration/multifd-channels.js';
import { PrecopySender } from '../migration/precopy-sender.js';
import { secureClient, secureServer, type TlsCredsX509 } from '../migration/tls.js';
import {
  DEFAULT_PEER_TIMEOUT_MS, bulkReads, connectForMigration, listenForMigration, parseTcpUri, watchForDeadPeer, type IncomingListener,
} from '../migration/transport.js';
import type { Socket } from 'node:net';
import type { Vm } from './vm.js';

/** QEMU's default downtime limit (ms) and multifd channel count. */
const DEFAULT_PARAMETERS: MigrationParameters = {
  'downtime-limit': 300, 'max-bandwidth': 0, 'multifd-channels': 2, 'x-verify': false,
  'tls-creds': '', 'tls-hostname': '', 'x-peer-timeout': DEFAULT_PEER_TIMEOUT_MS,
};

/** How the controller's VM ended, for the process's exit status. */
export type ControllerEnd =
  | { kind: 'quit' }
  | { kind: 'migrated'; uri: string }
  | { kind: 'incoming-failed'; message: string };

/**
 * The VM as the control plane drives it (VmControl for QMP): run state, user pauses, migration out
 * and in, events. One VM, one migration at a time.
 */
export class VmController implements VmControl {
  private state: RunState;
  private readonly events = new EventEmitter();
  private params: MigrationParameters = { ...DEFAULT_PARAMETERS };
  private readonly caps = new Map<MigrationCapabilityName, boolean>([
    ['auto-converge', true], ['multifd', false], ['x-verify', false], ['events', true],
  ]);
  private sender: PrecopySender | undefined;
  /** What query-migrate says when no migration is under way: `{}` until one has run, as QEMU. */
  private lastInfo: MigrationInfo = {};
  private userPaused = false;
  private resolveEnd!: (e: ControllerEnd) => void;
  /** Resolves when the VM should end: quit, or it now runs on a migration destination. */
  readonly ended: Promise<ControllerEnd>;

  constructor(
    private readonly vm: Vm,
    incoming: boolean,
    private readonly testOnly: {
      /** Churn memslots on the source while a migration runs, the way QEMU's 2015 boot did. */
      readonly churnMemslots?: boolean;
      /** As a destination, run the guest on sending LOADED, without the source's COMMIT (ReceiveOptions). */
      readonly resumeOnLoaded?: boolean;
    } = {},
    /** The tls-creds-x509 objects given with --object, by id (QMP tls-creds names one). */
    private readonly tlsCreds: ReadonlyMap<string, TlsCredsX509> = new Map(),
  ) {
    this.state = incoming ? 'inmigrate' : 'running';
    this.ended = new Promise((resolve) => { this.resolveEnd = resolve; });
  }

  runState(): RunState {
    return this.state;
  }

  private emit(e: VmEvent): void {
    this.events.emit('event', e);
  }

  onEvent(listener: (e: VmEvent) => void): () => void {
    this.events.on('event', listener);
    return () => this.events.off('event', listener);
  }

  async stop(): Promise<void> {
    if (this.state === 'inmigrate') throw new VmControlError('the VM is waiting for an incoming migration');
    if (this.userPaused) return;
    this.userPaused = true;
    await this.vm.pause();
    if (this.state === 'running') this.state = 'paused';
    this.emit({ event: 'STOP' });
  }

  cont(): void {
    if (this.state === 'inmigrate') throw new VmControlError('the VM is waiting for an incoming migration; it resumes when the migration completes');
    if (this.state === 'postmigrate') throw new VmControlError('the VM was migrated away; it runs on the destination now');
    if (!this.userPaused) return;
    this.userPaused = false;
    this.vm.resume();
    if (this.state === 'paused') this.state = 'running';
    this.emit({ event: 'RESUME' });
  }

  async quit(): Promise<void> {
    this.sender?.cancel();
    this.state = 'shutdown';
    this.emit({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } });
    this.resolveEnd({ kind: 'quit' });
  }

  migrate(uri: string): void {
    parseTcpUri(uri);
    if (this.sender?.inProgress) {
      throw new VmControlError('a migration is already in progress');
    }
    if (this.state === 'inmigrate') throw new VmControlError('the VM is waiting for an incoming migration');
    this.lastInfo = { status: 'setup' };
    this.emitMigration('setup');
    void this.runMigration(uri, Date.now());
  }

  private async runMigration(uri: string, startMs: number): Promise<void> {
    let sender: PrecopySender | undefined;
    try {
      const peerTimeoutMs = this.params['x-peer-timeout'];
      const tcp = await connectForMigration(uri, peerTimeoutMs);
      const creds = this.tlsCredsInUse();
      // The name the destination's certificate must carry: tls-hostname, else the URI's host.
      const hostname = this.params['tls-hostname'] || parseTcpUri(uri).host;
      const socket = creds === undefined ? tcp : await secureClient(tcp, creds, hostname);
      const churn = this.testOnly.churnMemslots === true;
      sender = new PrecopySender(this.vm, socket, () => this.params, () => this.caps.get('auto-converge') === true, (status) => {
        if (status !== 'setup') this.emitMigration(status);
        // The guest stops for the switch-over, and runs on here if it fails: STOP and RESUME say so,
        // as QEMU's do (vm_stop for finish-migrate; vm_start when a migration in that state fails).
        if (status === 'device') {
          this.state = 'finish-migrate';
          if (!this.userPaused) this.emit({ event: 'STOP' });
        } else if ((status === 'failed' || status === 'cancelled') && this.state === 'finish-migrate') {
          this.state = this.userPaused ? 'paused' : 'running';
          if (!this.userPaused) this.emit({ event: 'RESUME' });
        }
      }, {
        testOnlyBeforeFinalSync: churn ? () => this.churnOnce() : undefined,
        startMs,
        multifd: this.caps.get('multifd') === true ? {
          channels: this.params['multifd-channels'],
          open: (session, announce) => MultifdChannels.open({
            uri, session, count: this.params['multifd-channels'],
            regions: this.vm.memory.regions.map((r) => ({ hva: r.hva, sizeBytes: r.sizeBytes })),
            tls: creds === undefined ? undefined : { creds, hostname }, peerTimeoutMs,
          }, announce),
        } : undefined,
      });
      this.sender = sender;
      const churning = churn && setInterval(() => {
        if (sender?.status === 'active' && !this.churnPending) void this.churnOnce();
      }, 5);
      try {
        await sender.run();
      } finally {
        if (churning) clearInterval(churning);
      }
      this.lastInfo = sender.info();
      this.state = 'postmigrate';
      this.resolveEnd({ kind: 'migrated', uri });
    } catch (e) {
      this.lastInfo = sender?.info() ?? { status: 'failed', 'error-desc': e instanceof Error ? e.message : String(e) };
      if (sender === undefined) this.emitMigration('failed');
      this.state = this.userPaused ? 'paused' : 'running';
    }
  }

  private churnChain: Promise<void> = Promise.resolve();
  private churnPending = false;

  /**
   * Tests only: splits the low RAM slot around the 2015 kvmvapic ROM window and merges it back.
   * Churns run one after another; each resolves when its own changes are done.
   */
  private churnOnce(): Promise<void> {
    this.churnPending = true;
    this.churnChain = this.churnChain.then(async () => {
      await this.vm.memslots.punchHole(0xca000, 0x3000);
      await this.vm.memslots.fillHole(0xca000, 0x3000);
      await this.vm.memslots.coalesce();
    }).finally(() => { this.churnPending = false; });
    return this.churnChain;
  }

  /** A MIGRATION event, as QEMU sends it: only with the events capability on (tsvmm's default). */
  private emitMigration(status: string): void {
    if (this.caps.get('events') === true) this.emit({ event: 'MIGRATION', data: { status } });
  }

  async migrateIncoming(uri: string): Promise<void> {
    if (this.state !== 'inmigrate') throw new VmControlError("migrate-incoming needs a VM started with '--incoming defer'");
    const listener = await listenForMigration(uri);
    void this.receive(listener).finally(() => listener.close());
  }

  /** Receives into the VM and starts it once loaded; a failed stream ends the VM without running it. */
  async receive(listener: IncomingListener): Promise<void> {
    this.lastInfo = { status: 'active' };
    this.emitMigration('active');
    try {
      const creds = this.tlsCredsInUse();
      // Plain TCP is read in bulk (transport.ts, bulkReads); TLS decrypts in Node's own stream.
      // Read as each connection comes: set before the source connects, it applies.
      const secure = (s: Socket) => {
        watchForDeadPeer(s, this.params['x-peer-timeout']);
        return creds === undefined ? Promise.resolve(bulkReads(s)) : secureServer(s, creds);
      };
      // Before reading the stream (its bytes wait in the kernel meanwhile): never during it.
      // Its records are decoded once more at SWITCHOVER (receiveMigration, rehearsalRecords).
      const rehearsalRecords: Buffer[] = [];
      await this.vm.rehearseStateRestore((name, state) => {
        const r = stateRecord(name, state);
        rehearsalRecords.push(r);
        return parseState(r.subarray(RECORD_HEADER_BYTES)).state;
      }).catch((e: unknown) => process.stderr.write(`tsvmm: rehearsing the state restore failed (the migration goes on): ${e instanceof Error ? e.message : String(e)}\n`));
      rehearseTailDecoding(rehearsalRecords);
      const main = await secure(await listener.connection);
      const connectedMs = Date.now();
      const received = await receiveMigration(this.vm, main, async (count, timeoutMs) => Promise.all((await listener.next(count, timeoutMs)).map(secure)),
        { testOnlyResumeOnLoaded: this.testOnly.resumeOnLoaded, rehearsalRecords, peerTimeoutMs: this.params['x-peer-timeout'] });
      // The guest first: everything before this is downtime. Then QMP's events in QEMU's order (its
      // process_incoming_migration_bh: vm_start, which sends RESUME, then the MIGRATION status
      // completed, "as soon as an external observer sees this event they might start to prod at the
      // VM"); QEMU 7.2's destination sends them so (checked over QMP).
      this.state = 'running';
      // RESUME is stamped as the guest is started, before its devices start and its vCPUs are let go,
      // as QEMU's vm_prepare_start sends it ("the CPUs will be resumed shortly later"), and sent once
      // start() has handed the vCPU threads the CPU (VcpuThreads.handOver): a spinner sharing this
      // thread's CPU waited ~0.2-0.4 ms for it in about half the runs. Idle 1 GiB on kvm_pvm, 12
      // alternated runs a side, COMMIT read to the vCPU unparked: mean 0.11 ms against 0.18, the
      // slowest 0.18 against 0.41.
      const resumedAt = performance.timeOrigin + performance.now();
      this.vm.start();
      this.emit({ event: 'RESUME', at: resumedAt });
      listener.close();
      this.lastInfo = { status: 'completed' };
      this.emitMigration('completed');
      process.stderr.write(`tsvmm: incoming migration completed: ${(received.bytes / 2 ** 20).toFixed(1)} MiB in ${received.passes} passes, `
        + `${Date.now() - connectedMs} ms from the connection; the guest runs here\n`);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      this.lastInfo = { status: 'failed', 'error-desc': message };
      this.emitMigration('failed');
      this.state = 'internal-error';
      this.resolveEnd({ kind: 'incoming-failed', message });
    }
  }

  /** The credentials migrate-set-parameters tls-creds names, or undefined for plain TCP. */
  private tlsCredsInUse(): TlsCredsX509 | undefined {
    const id = this.params['tls-creds'];
    return id === '' ? undefined : this.tlsCredsNamed(id);
  }

  private tlsCredsNamed(id: string): TlsCredsX509 {
    const creds = this.tlsCreds.get(id);
    if (creds === undefined) throw new VmControlError(`No TLS credentials with id '${id}': start tsvmm with --object tls-creds-x509,id=${id},dir=PATH,endpoint=...`);
    return creds;
  }

  migrateCancel(): void {
    this.sender?.cancel();
  }

  queryMigrate(): MigrationInfo {
    const s = this.sender;
    if (s?.inProgress) return s.info();
    return this.lastInfo;
  }

  migrationParameters(): MigrationParameters {
    return { ...this.params };
  }

  setMigrationParameters(p: Partial<MigrationParameters>): void {
    if (p['downtime-limit'] !== undefined && !(p['downtime-limit'] >= 0 && p['downtime-limit'] <= 2_000_000)) {
      throw new VmControlError(`Parameter 'downtime-limit' expects an integer in the range of 0 to 2000 seconds`);
    }
    if (p['max-bandwidth'] !== undefined && !(p['max-bandwidth'] >= 0)) throw new VmControlError("Parameter 'max-bandwidth' expects a non-negative number");
    if (p['multifd-channels'] !== undefined && !(p['multifd-channels'] >= 1 && p['multifd-channels'] <= 255)) {
      throw new VmControlError("Parameter 'multifd-channels' expects a value between 1 and 255");
    }
    // TCP_USER_TIMEOUT is an int of ms; past an hour a dead peer is found by TCP's own retries sooner.
    if (p['x-peer-timeout'] !== undefined && !(p['x-peer-timeout'] >= 0 && p['x-peer-timeout'] <= 3_600_000)) {
      throw new VmControlError("Parameter 'x-peer-timeout' expects a value between 0 (off) and 3600000 ms");
    }
    if (p['tls-creds'] !== undefined && p['tls-creds'] !== '') this.tlsCredsNamed(p['tls-creds']);
    this.params = { ...this.params, ...p };
    // x-verify is both a parameter and a capability (QEMU scripts use either): one switch.
    if (p['x-verify'] !== undefined) this.caps.set('x-verify', p['x-verify']);
  }

  migrationCapabilities(): { capability: MigrationCapabilityName; state: boolean }[] {
    return [...this.caps].map(([capability, state]) => ({ capability, state }));
  }

  setMigrationCapabilities(caps: { capability: string; state: boolean }[]): void {
    for (const c of caps) {
      if (!this.caps.has(c.capability as MigrationCapabilityName)) throw new VmControlError(`Capability '${c.capability}' is not supported by tsvmm`);
    }
    for (const c of caps) {
      this.caps.set(c.capability as MigrationCapabilityName, c.state);
      if (c.capability === 'x-verify') this.params['x-verify'] = c.state; // capability and parameter are one switch
    }
  }
}
