/** Binary size suffixes, as QEMU's -m and most VMM command lines take them. */
const UNITS: Record<string, number> = { '': 1024 ** 2, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * Parses a memory size like QEMU's `-m`: a number with an optional K/M/G/T suffix (KiB, MiB, ...,
 * "iB"/"B" tails accepted), where a bare number means MiB. Returns bytes, or throws a RangeError that
 * quotes the input.
 */
export function parseMemorySize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtb]?)(?:i?b)?\s*$/i.exec(text);
  if (m === null) throw new RangeError(`cannot parse memory size '${text}': use a number with K, M or G (e.g. 256M, 1G)`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new RangeError(`memory size '${text}' is not a positive whole number of bytes`);
  if (bytes % 4096 !== 0) throw new RangeError(`memory size '${text}' is not a multiple of 4 KiB`);
  return bytes;
}

export function formatBytes(bytes: number): string {
  for (const [unit, size] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(1))} ${unit}`;
  }
  return `${bytes} B`;
}
