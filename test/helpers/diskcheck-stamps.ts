/**
 * The stamp the diskcheck guest writes into every 512-byte sector (guests/README.md, "diskcheck"), so
 * a test can find the guest's writes in the image file afterwards, independently of the guest's code.
 */
export const SECTOR = 512;
const MAGIC = Buffer.from('DISKCHK1');
const WORDS = 121;

function fnv1a32(b: Buffer): number {
  let h = 0x811c9dc5;
  for (const byte of b) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h;
}

export function diskcheckStamp(lba: number, run: number, pass: number): Buffer {
  const s = Buffer.alloc(SECTOR);
  MAGIC.copy(s, 0);
  s.writeBigUInt64LE(BigInt(lba), 8);
  s.writeUInt32LE(run, 16);
  s.writeUInt32LE(pass, 20);
  const base = (Math.imul(lba >>> 0, 0x9e3779b1) + Math.imul(run, 0x85ebca6b) + Math.imul(pass, 0xc2b2ae35)) >>> 0;
  for (let k = 0; k < WORDS; k++) s.writeUInt32LE((base + Math.imul(k, 0x27d4eb2f)) >>> 0, 24 + 4 * k);
  s.writeUInt32LE(fnv1a32(s.subarray(0, 508)), 508);
  return s;
}

export interface StampCheck {
  ok: number;
  bad: number;
  /** The first few bad sectors with what they hold. */
  firstBad: string[];
}

/** Checks sectors 0..sectors-1 of image hold the stamps of (run, pass). */
export function checkDiskStamps(image: Buffer, run: number, pass: number, sectors = image.length / SECTOR): StampCheck {
  const r: StampCheck = { ok: 0, bad: 0, firstBad: [] };
  for (let lba = 0; lba < sectors; lba++) {
    const got = image.subarray(lba * SECTOR, (lba + 1) * SECTOR);
    if (got.equals(diskcheckStamp(lba, run, pass))) {
      r.ok++;
      continue;
    }
    r.bad++;
    if (r.firstBad.length < 5) {
      r.firstBad.push(`sector ${lba}: magic=${got.subarray(0, 8).toString('latin1')} lba=${got.readBigUInt64LE(8)} run=${got.readUInt32LE(16)} pass=${got.readUInt32LE(20)}`);
    }
  }
  return r;
}
