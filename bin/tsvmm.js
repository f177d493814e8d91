#!/usr/bin/env node
// The `tsvmm` command: runs the compiled CLI (`npm install` builds dist/).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('tsvmm: not built yet: run `npm install` in the tsvmm directory\n');
  process.exit(2);
}
const { main } = await import(entry.href);
process.exit(await main(process.argv.slice(2)));
