/**
 * The device state a switch-over sends (STATE records, state-record.ts), encoded so that the pause
 * does as little as it can: the encoder is run warm beforehand, and the pieces whose state is all
 * byte arrays (the in-kernel and vCPU state) are read in the pause straight into records encoded
 * before it (stateRecordTemplate), so only the rest is encoded in the pause.
 */
import { SWITCHOVER_ENCODING_ROUNDS } from './protocol.js';
import { stateRecord, stateRecordTemplate } from './state-record.js';

/** What of a VM the switch-over's state needs (PrecopySender's MigrationSource). */
export interface StateSource {
  /** Every piece of state outside RAM; pieces it can read in place into a state `into` holds are that state (Vm.captureState). */
  captureState(into?: ReadonlyMap<string, unknown>): { name: string; state: unknown }[];
  /** State readable while the guest runs, of the shape captureState gives (Vm.rehearsalState). */
  rehearsalState?(): { name: string; state: unknown }[];
}

export class SwitchoverState {
  private templates = new Map<string, { readonly record: Buffer; readonly state: unknown }>();

  constructor(
    private readonly source: StateSource,
    /** The END record the tail ends with (StreamWriter.endRecord): its digest is part of the tail's assembly, warmed with it. */
    private readonly endRecord: () => Buffer,
  ) {}

  /**
   * At the migration's start: encodes the VM's state (read live, not a consistent snapshot) and an END
   * record SWITCHOVER_ENCODING_ROUNDS times over, and drops them: the switch-over's encoding, run warm
   * in the pause. At the start, not right before the pause: the compiles and the garbage they leave
   * behind, done then, took the CPUs from the pause itself (30 rounds there, idle 1 GiB switch-overs:
   * pause medians 1.8 ms against 0.7, 12 alternated runs).
   */
  rehearse(): void {
    const live = this.source.rehearsalState?.() ?? [];
    for (let round = 0; round < SWITCHOVER_ENCODING_ROUNDS; round++) {
      Buffer.concat([...live.map((piece) => stateRecord(piece.name, piece.state)), this.endRecord()]);
    }
  }

  /**
   * Right before the pause, the guest still running: builds the templates, which runs the encoder once
   * more on state read live (its first runs, V8 compiling it when the code cache does not hold it, are
   * then not in the downtime, and its code and data are in the caches when the pause needs them), and
   * assembles a tail once (the END digest, one buffer of records), which nothing before the switch-over
   * runs. On kvm_pvm an idle guest's capture and encode took 1.9 ms without any rehearsal, 1.2 ms with
   * one at the migration's start (medians of 5), and encoding alone ~0.25 ms with that one, ~0.1 ms
   * with this one here. The destination rehearses its restore likewise (Vm.rehearseStateRestore).
   */
  prepare(): void {
    this.templates = new Map((this.source.rehearsalState?.() ?? []).map((piece) => [piece.name, stateRecordTemplate(piece.name, piece.state)]));
    Buffer.concat([...[...this.templates.values()].map((t) => t.record), this.endRecord()]);
  }

  /** In the pause: captures every piece, into the templates where it can, and returns the pieces (for their count) and their records. */
  capture(): { pieces: number; records: Buffer[] } {
    const templates = this.templates;
    const pieces = this.source.captureState(new Map([...templates].map(([name, t]) => [name, t.state])));
    const records = pieces.map((piece) => {
      const template = templates.get(piece.name);
      return template !== undefined && piece.state === template.state ? template.record : stateRecord(piece.name, piece.state);
    });
    return { pieces: pieces.length, records };
  }
}
