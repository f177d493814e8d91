import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConsoleProcess } from './console-process.js';
import { CLI } from './paths.js';

/** A real `tsvmm run` process with its serial console on stdio (typed into, read back) and QMP on a unix socket. */
export class TsvmmProcess extends ConsoleProcess {
  readonly qmpPath: string;

  /** `prefix` runs tsvmm under another command (e.g. `ip netns exec NS`). */
  constructor(args: string[], name: string, env: Record<string, string> = {}, prefix: readonly string[] = []) {
    const qmpPath = path.join(mkdtempSync(path.join(tmpdir(), `tsvmm-${name}-`)), 'qmp.sock');
    const command = [...prefix, process.execPath, CLI, 'run', ...args, '--qmp', `unix:${qmpPath}`];
    super(command[0]!, command.slice(1), env, `tsvmm-${name}`);
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
