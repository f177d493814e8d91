import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConsoleProcess } from './console-process.js';
import { CLI } from './paths.js';

/** A real `tsvmm run` process with its serial console on stdio (typed into, read back) and QMP on a unix socket. */
export class TsvmmProcess extends ConsoleProcess {
  readonly qmpPath: string;

  constructor(args: string[], name: string, env: Record<string, string> = {}) {
    const qmpPath = path.join(mkdtempSync(path.join(tmpdir(), `tsvmm-${name}-`)), 'qmp.sock');
    super(process.execPath, [CLI, 'run', ...args, '--qmp', `unix:${qmpPath}`], env);
    this.qmpPath = qmpPath;
  }

  async waitForQmp(): Promise<void> {
    await this.waitFor(() => existsSync(this.qmpPath), 'the QMP socket');
  }
}

let nextPort = 47000 + (process.pid % 1000) * 10;
/** A loopback port for a migration stream (distinct per call within a test run). */
export function migrationPort(): number {
  return nextPort++;
}
