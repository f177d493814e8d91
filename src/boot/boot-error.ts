/** A kernel image or boot parameter that cannot be loaded; the message says what and what to do. */
export class BootError extends Error {
  override name = 'BootError';
}
