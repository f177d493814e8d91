// bench/migrate --phases: the switch-over's phases read from both VMMs' trace lines.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PHASES, formatPhases, medianPhases, switchOverPhases } from '../../../bench/switchover-phases.mjs';
import { ROOT } from '../../helpers/paths.js';

const line = (ms: number, thread: string, what: string) => `tsvmm-trace: @${ms.toFixed(3)} ${thread} ${what}\n`;

describe('switch-over phases from trace lines', () => {
  const source = [
    line(1000.0, 'main', 'migration: sync 2: 1 dirty pages, expected downtime 0.5 ms'),
    line(1001.0, 'main', 'migration: switch-over, pausing the vCPUs'),
    line(1001.4, 'main', 'migration: vCPUs paused'),
    line(1002.0, 'main', 'migration: END sent'),
    line(1002.9, 'main', 'migration: LOADED received'),
    'tsvmm: something else on stderr\n',
  ].join('');
  const destination = [
    line(1002.5, 'main', 'incoming migration: first STATE record'),
    line(1002.75, 'main', 'incoming migration: LOADED sent'),
    line(1003.1, 'main', 'incoming migration: COMMIT received'),
    line(1003.2, 'worker0', 'vcpu: unparked'),
    line(1009.0, 'worker0', 'vcpu: unparked'), // a later one: the first counts
  ].join('');

  it('times each phase between its two lines, on either side, and the whole stop', () => {
    const p = switchOverPhases(source, destination);
    const close = (name: string, ms: number) => expect(p[name], name).toBeCloseTo(ms, 6);
    close('pause', 0.4);
    close('to END', 0.6);
    close('wake', 0.5);
    close('load', 0.25);
    close('LOADED', 0.15);
    close('COMMIT', 0.2);
    close('start', 0.1);
    close('total', 2.2);
    expect(formatPhases(p)).toBe('pause 0.40, to END 0.60, wake 0.50, load 0.25, LOADED 0.15, COMMIT 0.20, start 0.10 = 2.20 ms');
  });

  it('leaves out what the lines do not show, and takes medians of what they do', () => {
    expect(switchOverPhases('', '')).toEqual({});
    expect(formatPhases({})).toBe('no trace lines');
    const sourceOnly = switchOverPhases(source, '');
    expect(Object.keys(sourceOnly)).toEqual(['pause', 'to END']);
    expect(medianPhases([{ pause: 1 }, { pause: 3, load: 2 }, { pause: 2 }])).toEqual({ pause: 2, load: 2 });
  });

  it('names trace lines that tsvmm writes (a renamed line would leave its phase out)', () => {
    const sources = (dir: string): string[] => readdirSync(dir, { withFileTypes: true })
      .flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [readFileSync(path.join(dir, e.name), 'utf8')] : []));
    const all = sources(path.join(ROOT, 'src')).join('\n');
    // Each tracePhase('...') or tracePhase(`...`) argument, a template's ${...} parts matching anything.
    const written = [...all.matchAll(/tracePhase\((['`])(.*?)\1\)/g)].map(([, quote, text]) => (quote === "'"
      ? new RegExp(`^${text!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`)
      : new RegExp(`^${text!.split(/\$\{[^}]*\}/).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`)));
    expect(written.length).toBeGreaterThan(10);
    for (const [, [, from], [, to]] of PHASES) {
      for (const text of [from, to]) expect(written.some((re) => re.test(text)), text).toBe(true);
    }
    expect(written.some((re) => re.test('migration: no such line'))).toBe(false);
  });
});
