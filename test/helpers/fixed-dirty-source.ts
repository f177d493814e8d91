// A MigrationSource without KVM, for PrecopySender's unit tests: real guest memory, and a dirty log
// that reports the same pages at every sync.
import type { MigrationParameters } from '../../src/control/vm-control.js';
import type { DirtyTracker } from '../../src/memory/dirty-tracker.js';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MigrationSource } from '../../src/migration/precopy-sender.js';
import type { MachineShape } from '../../src/migration/protocol.js';

/** The shape of a one-vCPU machine with `mem`'s regions and no devices. */
export function shapeOf(mem: GuestMemory): MachineShape {
  return { memBytes: mem.sizeBytes, cpus: 1, regions: mem.regions.map((r) => ({ start: r.start, sizeBytes: r.sizeBytes })), devices: [] };
}

/**
 * A source over `src` whose every dirty-log sync reports the pages set in `firstWord` (the first
 * word of region 0's bitmap) dirty; it counts the syncs, records every throttle asked of it, says
 * whether its guest is paused (pause and resume) and whether it ever was, and runs `onSync` (if given) at each sync, before
 * it answers.
 */
export function fixedDirtySource(src: GuestMemory, firstWord: number, onSync?: () => void): { source: MigrationSource; syncs: () => number; throttles: number[]; paused: () => boolean; everPaused: () => boolean } {
  const region = src.regions[0]!;
  let syncs = 0;
  let tracking = false;
  const dirty = {
    get isTracking() { return tracking; },
    async start() { tracking = true; },
    sync() {
      onSync?.();
      syncs++;
      const bitmap = new Uint32Array(region.dirty.words.length);
      bitmap[0] = firstWord;
      let pages = 0;
      for (let w = firstWord; w !== 0; w &= w - 1) pages++;
      return [{ region, bitmap, pages }];
    },
    async stop() { tracking = false; },
  } as unknown as DirtyTracker;
  const throttles: number[] = [];
  let pauses = 0;
  let everPaused = false;
  const source: MigrationSource = {
    memory: src, dirty, pause: async () => { pauses++; everPaused = true; }, resume: () => { pauses--; }, throttle: (p) => { throttles.push(p); },
    shape: () => shapeOf(src), captureState: () => [{ name: 'vm', state: {} }],
  };
  return { source, syncs: () => syncs, throttles, paused: () => pauses > 0, everPaused: () => everPaused };
}

/** PrecopySender's parameters: QEMU's defaults, unlimited bandwidth, `channels` multifd channels (0: none). */
export const senderParams = (channels: number) => ({ 'downtime-limit': 300, 'max-bandwidth': 0, 'multifd-channels': channels, 'x-verify': false, 'tls-creds': '', 'tls-hostname': '', 'x-peer-timeout': 0 } satisfies MigrationParameters);
