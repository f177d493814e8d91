import { readFileSync } from 'node:fs';

/** Anonymous memory resident in process `pid` (RssAnon of /proc/PID/status), in KiB: guest RAM it holds, and the heap. */
export function anonResidentKiB(pid: number): number {
  const m = /^RssAnon:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  if (m === null) throw new Error(`no RssAnon in /proc/${pid}/status`);
  return Number(m[1]);
}
