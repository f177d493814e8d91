// Reads the start-up phase lines tsvmm writes to stderr with TSVMM_TRACE_PHASES=1
// (src/machine/phase-trace.ts): `tsvmm-trace: +MS THREAD what (cpu C, thread T, queued Q)`, MS since the
// process started, C the process's CPU milliseconds so far (T, Q: the thread's CPU and queued time).

export const TRACE_ENV = { ...process.env, TSVMM_TRACE_PHASES: '1' };

/** The phase lines in `stderr`, in order: { ms, thread, what }. */
export function parsePhases(stderr) {
  return [...stderr.matchAll(/^tsvmm-trace: \+([\d.]+) (\S+) (.*?)(?: \(cpu ([\d.]+)[^)]*\))?$/gm)].map((m) => ({ ms: Number(m[1]), thread: m[2], what: m[3], cpuMs: Number(m[4]) }));
}

/** Milliseconds of the first phase whose text matches `re`, or NaN. */
export function phaseMs(phases, re) {
  return phases.find((p) => re.test(p.what))?.ms ?? NaN;
}

/** The milestones of a launch, as `name ms` pairs for one line of output. */
export function milestones(phases) {
  const node = phases.find((p) => p.what.startsWith('modules loaded'))?.what.match(/bootstrapped at \+([\d.]+)/)?.[1];
  const at = {
    'node ready': Number(node ?? NaN),
    'CLI loaded': phaseMs(phases, /^modules loaded/),
    'VM built': phaseMs(phases, /^VM created/),
    'vCPU thread loaded': phaseMs(phases, /^vcpu thread: modules loaded/),
    'guest entered': phaseMs(phases, /^vcpu thread: entering the guest/),
    'first console byte': phaseMs(phases, /^first console byte/),
    'VM ended': phaseMs(phases, /^VM ended/),
  };
  return Object.entries(at).filter(([, ms]) => !Number.isNaN(ms)).map(([k, ms]) => `${k} ${ms.toFixed(0)}`).join(', ');
}
