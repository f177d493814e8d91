// The phases of one tsvmm switch-over, read from the TSVMM_TRACE_PHASES=2 lines its source and
// destination wrote on stderr (`tsvmm-trace: @EPOCH_MS THREAD what`, both on this host's clock):
// bench/migrate --phases prints them beside each tsvmm migration, and their medians per case, to show
// where the guest's downtime goes. Each phase names the trace lines it runs between (src/migration/
// precopy-sender.ts, incoming.ts, src/vcpu/run-loop.ts); one whose lines are missing is undefined.

/** [name, [side, trace text it starts at], [side, trace text it ends at]]; S = source, D = destination. */
export const PHASES = [
  ['pause', ['S', 'migration: switch-over, pausing the vCPUs'], ['S', 'migration: vCPUs paused']],
  ['to END', ['S', 'migration: vCPUs paused'], ['S', 'migration: END sent']],
  ['wake', ['S', 'migration: END sent'], ['D', 'incoming migration: first STATE record']],
  ['load', ['D', 'incoming migration: first STATE record'], ['D', 'incoming migration: LOADED sent']],
  ['LOADED', ['D', 'incoming migration: LOADED sent'], ['S', 'migration: LOADED received']],
  ['COMMIT', ['S', 'migration: LOADED received'], ['D', 'incoming migration: COMMIT received']],
  ['start', ['D', 'incoming migration: COMMIT received'], ['D', 'vcpu: unparked']],
];

/** The first time each trace text appears in `stderr` after the switch-over began (epoch ms). */
function traceTimes(stderr) {
  const times = new Map();
  for (const m of stderr.matchAll(/^tsvmm-trace: @([\d.]+) \S+ (.*)$/gm)) {
    if (!times.has(m[2])) times.set(m[2], Number(m[1]));
  }
  return times;
}

/**
 * Milliseconds of each phase of the switch-over, and `total` from the source's pause to the
 * destination's vCPU running (the guest's whole stop, as the trace sees it); {} without trace lines.
 */
export function switchOverPhases(sourceStderr, destinationStderr) {
  const sides = { S: traceTimes(sourceStderr), D: traceTimes(destinationStderr) };
  const at = ([side, text]) => sides[side].get(text);
  const phases = {};
  for (const [name, from, to] of PHASES) {
    if (at(from) !== undefined && at(to) !== undefined) phases[name] = at(to) - at(from);
  }
  const first = at(PHASES[0][1]);
  const last = at(PHASES[PHASES.length - 1][2]);
  if (first !== undefined && last !== undefined) phases.total = last - first;
  return phases;
}

/** The median of each phase over several switch-overs. */
export function medianPhases(all) {
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const out = {};
  for (const name of [...PHASES.map(([n]) => n), 'total']) {
    const xs = all.map((p) => p[name]).filter((x) => x !== undefined);
    if (xs.length > 0) out[name] = median(xs);
  }
  return out;
}

/** `pause 0.41, to END 0.55, ... = 2.61 ms` (milliseconds, to 0.01). */
export function formatPhases(p) {
  const names = PHASES.map(([n]) => n).filter((n) => p[n] !== undefined);
  if (names.length === 0) return 'no trace lines';
  return `${names.map((n) => `${n} ${p[n].toFixed(2)}`).join(', ')}${p.total === undefined ? '' : ` = ${p.total.toFixed(2)} ms`}`;
}
