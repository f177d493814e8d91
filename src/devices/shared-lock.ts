/**
 * A spinlock in word `index` of a device's shared state (an Int32Array over a SharedArrayBuffer), for
 * devices whose registers several threads touch: every vCPU thread takes port exits, and the main
 * thread feeds input and captures state. Critical sections are a few dozen instructions, so spinning
 * beats sleeping.
 */
export function withSharedLock<T>(state: Int32Array, index: number, body: () => T): T {
  while (Atomics.compareExchange(state, index, 0, 1) !== 0) { /* spin */ }
  try {
    return body();
  } finally {
    Atomics.store(state, index, 0);
  }
}
