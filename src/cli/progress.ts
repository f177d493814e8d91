/**
 * How `tsvmm migrate` shows a migration: a progress line per poll and a summary at the end, both
 * pure functions of query-migrate's answer, and a writer that redraws one line on a terminal.
 */
import type { MigrationInfo } from '../control/vm-control.js';

const BINARY_UNITS = [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const;

/** Bytes in the largest binary unit that keeps the number at 1 or more: `123.4 MiB`, `512 B`. */
export function formatSize(bytes: number, decimals = 1): string {
  for (const [unit, size] of BINARY_UNITS) {
    if (bytes >= size) return `${(bytes / size).toFixed(decimals)} ${unit}`;
  }
  return `${bytes} B`;
}

/** `s` unless there is exactly one. */
function plural(n: number, word: string, words = `${word}s`): string {
  return `${n} ${n === 1 ? word : words}`;
}

/**
 * One poll's line: `pass 3  sent 123.4 MiB  remaining 5.6 MiB  dirty 1234 pages/s  bw 950.3 Mbit/s
 * expected downtime 12 ms`. Before RAM moves (setup) there are no counters, so it names the status.
 */
export function formatProgress(info: MigrationInfo): string {
  const ram = info.ram;
  if (ram === undefined) return `migration ${info.status ?? 'not started'}`;
  const parts = [
    `pass ${ram['dirty-sync-count']}`,
    `sent ${formatSize(ram.transferred)}`,
    `remaining ${formatSize(ram.remaining)}`,
    `dirty ${Math.round(ram['dirty-pages-rate'])} pages/s`,
    `bw ${ram.mbps.toFixed(1)} Mbit/s`,
  ];
  if (info['expected-downtime'] !== undefined) parts.push(`expected downtime ${Math.round(info['expected-downtime'])} ms`);
  // 'active' is the normal case; any other status (device: the final stop-and-copy) is worth seeing.
  if (info.status !== 'active') parts.push(`(${info.status})`);
  return parts.join('  ');
}

/**
 * The line printed on success: `migration completed: total 1234 ms, downtime 12 ms, 3 dirty syncs, sent
 * 1.02 GiB (260000 pages, 1200 zero pages)` (the syncs as QEMU counts them, its setup's included). Fields the VMM did not report are left out, not faked.
 */
export function formatSummary(info: MigrationInfo): string {
  const parts: string[] = [];
  if (info['total-time'] !== undefined) parts.push(`total ${info['total-time']} ms`);
  if (info.downtime !== undefined) parts.push(`downtime ${info.downtime} ms`);
  const ram = info.ram;
  if (ram !== undefined) {
    parts.push(plural(ram['dirty-sync-count'], 'dirty sync'));
    parts.push(`sent ${formatSize(ram.transferred, 2)} (${plural(ram.normal, 'page')}, ${plural(ram.duplicate, 'zero page')})`);
  }
  return `migration ${info.status}${parts.length > 0 ? ': ' : ''}${parts.join(', ')}`;
}

export interface TextOutput {
  write(text: string): unknown;
  isTTY?: boolean;
}

/**
 * Progress on a terminal redraws one line in place (\r, then erase to end of line: a shorter line
 * must not leave the tail of a longer one). Anywhere else (a log file, CI) each update is its own
 * line, since \r there would only produce one unreadable line.
 */
export class ProgressLine {
  private drawn = false;
  /** The last line written to an output that is not a terminal: the same again is not repeated. */
  private lastLine: string | undefined;

  constructor(private readonly out: TextOutput) {}

  update(text: string): void {
    if (this.out.isTTY === true) {
      this.out.write(`\r${text}\x1b[K`);
      this.drawn = true;
    } else if (text !== this.lastLine) {
      // A log gets a line per change, not one per poll: a migration waiting on its destination
      // polled the same line 40 times in 8 s (200 ms interval).
      this.out.write(`${text}\n`);
      this.lastLine = text;
    }
  }

  /** Moves past a redrawn line, so what is printed next starts on its own line. */
  end(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
