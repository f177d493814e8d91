/**
 * What the control plane (QMP) may ask of a running VM: the seam between src/control and the rest.
 * Field names and status strings follow QMP (qapi/migration.json, qapi/run-state.json), so scripts
 * written for QEMU read tsvmm's answers unchanged.
 */

/** QMP RunState values tsvmm uses. */
export type RunState = 'running' | 'paused' | 'inmigrate' | 'postmigrate' | 'finish-migrate' | 'shutdown' | 'internal-error';

/** QMP MigrationStatus values. */
export type MigrationStatusName = 'none' | 'setup' | 'active' | 'device' | 'completed' | 'failed' | 'cancelling' | 'cancelled';

/** query-migrate's answer (QMP MigrationInfo; absent fields are absent, as in QEMU). */
export interface MigrationInfo {
  /** Absent (the answer is `{}`) while no migration has run, as QEMU's. */
  status?: MigrationStatusName;
  ram?: {
    transferred: number; // bytes sent so far, all passes
    remaining: number; // dirty bytes still to send
    total: number; // guest RAM bytes
    duplicate: number; // zero pages sent as a flag
    normal: number; // pages sent with their data
    'normal-bytes': number;
    'dirty-pages-rate': number; // pages dirtied per second, last pass
    mbps: number; // measured bandwidth, megabits per second
    'dirty-sync-count': number; // dirty-log syncs so far, the start of logging the first (as QEMU's): n during pass n
    'page-size': number;
    'pages-per-second': number; // pages the current pass has sent per second, zero pages included
    'precopy-bytes': number; // bytes sent while the guest ran
    'downtime-bytes': number; // bytes sent while it was stopped (the switch-over)
    'multifd-bytes'?: number; // bytes sent over the multifd channels, with multifd
  };
  'total-time'?: number; // ms since migration start (or until the end)
  'expected-downtime'?: number; // ms, while active
  downtime?: number; // ms, once completed
  'setup-time'?: number; // ms from the migrate command to RAM moving (connection, TLS, header, channels)
  'multifd-channels'?: number; // tsvmm's: RAM went over this many channel connections
  'cpu-throttle-percentage'?: number; // auto-converge: the share of time the vCPUs are held paused
  'error-desc'?: string; // when failed
}

/** migrate-set-parameters / query-migrate-parameters (QMP names). */
export interface MigrationParameters {
  'downtime-limit': number; // ms, default 300
  'max-bandwidth': number; // bytes/s, 0 or absent = unlimited
  'multifd-channels': number; // default 2
  /** tsvmm's own: hash guest RAM on both sides at switch-over; the destination refuses a mismatch. */
  'x-verify': boolean;
  /** id of a tls-creds-x509 object: the stream runs over TLS ('' = plain TCP), as in QEMU. */
  'tls-creds': string;
  /** The name the destination's certificate must carry (default: the host of the migration URI). */
  'tls-hostname': string;
  /**
   * tsvmm's own, in ms: a peer that acknowledges nothing for this long (its host died or dropped off
   * the network) is taken for dead, and the migration fails; 0 = the kernel's TCP defaults
   * (transport.ts, watchForDeadPeer). Default 30000.
   */
  'x-peer-timeout': number;
}

/** migrate-set-capabilities names tsvmm knows; others are refused with a GenericError. */
export type MigrationCapabilityName = 'auto-converge' | 'multifd' | 'x-verify' | 'events';

/** QMP events tsvmm emits. */
export type VmEventName = 'STOP' | 'RESUME' | 'MIGRATION' | 'SHUTDOWN';
export interface VmEvent {
  event: VmEventName;
  data?: Record<string, unknown>; // MIGRATION: { status }, SHUTDOWN: { guest: boolean, reason: string }
  /** When it happened, if before it is emitted: wall-clock ms (performance.timeOrigin + performance.now()). */
  at?: number;
}

/** A command refused by the VM; `qmpClass` is QMP's error class ('GenericError', 'DeviceNotActive'...). */
export class VmControlError extends Error {
  override name = 'VmControlError';
  constructor(message: string, readonly qmpClass: 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' = 'GenericError') {
    super(message);
  }
}

export interface VmControl {
  runState(): RunState;
  /** Pauses every vCPU (QMP `stop`); emits STOP. */
  stop(): Promise<void>;
  /** Resumes (QMP `cont`); emits RESUME. Throws VmControlError while migrating in. */
  cont(): void;
  /** Ends the VM process cleanly (QMP `quit`); emits SHUTDOWN. */
  quit(): Promise<void>;
  /** Starts an outgoing migration to `uri` ('tcp:HOST:PORT'); returns at once, progress via queryMigrate/events. */
  migrate(uri: string): void;
  /** Listens for an incoming migration on `uri` (QMP migrate-incoming), for a VM started with --incoming defer. */
  migrateIncoming(uri: string): Promise<void>;
  migrateCancel(): void;
  queryMigrate(): MigrationInfo;
  migrationParameters(): MigrationParameters;
  setMigrationParameters(p: Partial<MigrationParameters>): void;
  migrationCapabilities(): { capability: MigrationCapabilityName; state: boolean }[];
  setMigrationCapabilities(caps: { capability: string; state: boolean }[]): void;
  /** Subscribes to events; returns an unsubscribe function. */
  onEvent(listener: (e: VmEvent) => void): () => void;
}
