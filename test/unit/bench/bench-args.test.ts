// The benchmarks' command line (bench/bench-args.mjs): --help from the script's own header and
// options, and a bad option as an error with exit status 2, for every script that takes options.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { benchUsage } from '../../../bench/bench-args.mjs';
import { ROOT } from '../../helpers/paths.js';

const BENCH = path.join(ROOT, 'bench');
/** Every bench script that reads a command line (the others are modules the scripts share). */
const scripts = readdirSync(BENCH).filter((f) => f.endsWith('.mjs') && readFileSync(path.join(BENCH, f), 'utf8').includes('benchArgs(import.meta.url'));
const runScript = (file: string, ...args: string[]) => spawnSync(process.execPath, [path.join(BENCH, file), ...args], { encoding: 'utf8', timeout: 30_000 });

describe('benchUsage', () => {
  it('prints the header comment without its #! line and comment marks, then each option with its default', () => {
    const source = ['#!/usr/bin/env node', '// bench/x: what it measures.', '//', '// Reproduce: node bench/x.mjs', "import path from 'node:path';", '// not the header'].join('\n');
    const usage = benchUsage(source, { runs: { type: 'string', default: '3' }, only: { type: 'string' }, phases: { type: 'boolean', default: false } });
    expect(usage).toBe([
      'bench/x: what it measures.', '', 'Reproduce: node bench/x.mjs', '',
      'Options:', '  --runs VALUE  (default: 3)', '  --only VALUE', '  --phases', '  --help, -h  this text', '',
    ].join('\n'));
  });
});

describe('every bench script', () => {
  it('is found', () => {
    expect(scripts).toEqual(expect.arrayContaining(['migrate.mjs', 'launch.mjs', 'virtio.mjs']));
  });

  it.each(scripts)('%s: --help prints its header and options and exits 0, before it needs KVM or a build', (file) => {
    const result = runScript(file, '--help');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(`bench/${file.replace('.mjs', '')}`);
    expect(result.stdout).toContain('Options:');
    expect(result.stderr).toBe('');
  });

  it.each(scripts)('%s: an unknown option is named on stderr, with exit status 2', (file) => {
    const result = runScript(file, '--no-such-option');
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("Unknown option '--no-such-option'");
    expect(result.stderr).toContain('--help');
    expect(result.stdout).toBe('');
  });
});
