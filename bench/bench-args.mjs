// The command line of a benchmark script: its options as node:util's parseArgs takes them, plus
// --help (-h). --help prints the script's header comment (what it measures, against what, how to
// reproduce it) and then its options with their defaults, both read from the script itself, so the
// help cannot drift from the code. A bad option or a stray argument is an error on stderr that names it,
// with exit status 2, as tsvmm's own CLI does; parseArgs' own error was an uncaught TypeError and a
// stack trace.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

/**
 * The parsed option values of the script at `scriptUrl` (its import.meta.url), for `options` in
 * parseArgs' form. Exits 0 after --help, 2 on an unknown option, a missing value or a positional
 * argument.
 */
export function benchArgs(scriptUrl, options, argv = process.argv.slice(2)) {
  const file = fileURLToPath(scriptUrl);
  const name = `bench/${path.basename(file, '.mjs')}`;
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h', default: false } } }));
  } catch (error) {
    process.stderr.write(`${name}: ${error.message}\nTry 'node ${name}.mjs --help' for its options.\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(benchUsage(readFileSync(file, 'utf8'), options));
    process.exit(0);
  }
  delete values.help;
  return values;
}

/**
 * A script's help text: its leading `//` comment (after any #! line), unindented, then one line per
 * option: `--name VALUE` (or `--name` for a switch) and its default, if it has one.
 */
export function benchUsage(source, options) {
  const header = [];
  for (const line of source.split('\n')) {
    if (header.length === 0 && line.startsWith('#!')) continue;
    if (!line.startsWith('//')) break;
    header.push(line.replace(/^\/\/ ?/, ''));
  }
  const rows = Object.entries(options).map(([option, spec]) => {
    const name = spec.type === 'boolean' ? `--${option}` : `--${option} VALUE`;
    const fallback = spec.default === undefined || spec.default === false ? '' : `  (default: ${spec.default})`;
    return `  ${name}${fallback}`;
  });
  return `${header.join('\n')}\n\nOptions:\n${rows.join('\n')}\n  --help, -h  this text\n`;
}
