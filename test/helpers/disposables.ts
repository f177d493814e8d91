// What a test file made and must undo after each test (guest memory, listeners, servers).
import { afterEach } from 'vitest';
import { GuestMemory } from '../../src/memory/guest-memory.js';

export interface Disposables {
  /** Disposed of after the current test, whatever its outcome. */
  add(d: { dispose(): void }): void;
  /** Guest memory of `sizeBytes`, disposed of after the current test. */
  memory(sizeBytes: number): GuestMemory;
}

/** Registers an afterEach that disposes of everything added during each test, in the order added. */
export function disposables(): Disposables {
  const pending: { dispose(): void }[] = [];
  afterEach(() => { pending.splice(0).forEach((d) => d.dispose()); });
  return {
    add: (d) => { pending.push(d); },
    memory: (sizeBytes) => {
      const m = GuestMemory.create(sizeBytes);
      pending.push(m);
      return m;
    },
  };
}
