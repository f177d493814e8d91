/**
 * What a destination says back on the main connection, as the source reads it (protocol.ts): ACCEPTED
 * for the header, APPLIED as it applies each live pass, then LOADED or REFUSED. The first two are
 * noted as they pass; the rest are the source's to act on.
 */
import { MigrationStreamError, RecordType } from './protocol.js';
import { RecordReader } from './record-reader.js';

export class DestinationAnswers {
  private readonly reader = new RecordReader();
  private headerAccepted = false;
  private applied = 0;

  push(bytes: Buffer): void {
    this.reader.push(bytes);
  }

  /** Whether the destination has answered HEADER with ACCEPTED (it must, before LOADED). */
  get accepted(): boolean {
    return this.headerAccepted;
  }

  /** The last pass the destination has said it applied (APPLIED), 0 before any. */
  get appliedPass(): number {
    return this.applied;
  }

  /**
   * The next answer past ACCEPTED (once) and APPLIED, which are noted, or undefined until more bytes
   * come. A second ACCEPTED is returned, as anything unexpected is. Throws MigrationStreamError on an
   * APPLIED that is not a pass number, or bytes that are no records (saying they are the destination's:
   * the reader's own message speaks of a stream).
   */
  next(): { type: number; payload: Buffer } | undefined {
    for (;;) {
      let r;
      try {
        r = this.reader.next();
      } catch (e) {
        if (!(e instanceof MigrationStreamError)) throw e;
        throw new MigrationStreamError(`the destination's answers are not records of this stream version (${e.message})`, { cause: e });
      }
      if (r?.type === RecordType.APPLIED) {
        if (r.payload.length !== 4) throw new MigrationStreamError(`the destination sent an APPLIED of ${r.payload.length} bytes, not 4`);
        this.applied = Math.max(this.applied, r.payload.readUInt32LE(0));
        continue;
      }
      if (r?.type !== RecordType.ACCEPTED || this.headerAccepted) return r;
      this.headerAccepted = true;
    }
  }
}
