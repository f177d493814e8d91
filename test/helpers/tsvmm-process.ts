import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConsoleProcess } from './console-process.js';
import { freePort } from './free-port.js';
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

/**
 * A loopback port for a migration stream: one the kernel found free a moment ago. (Ports counted up
 * from 47000 + pid % 1000 * 10 overlapped between test files, whose workers' pids differ, and lay in
 * the ephemeral range: a CI run found one "in use" when a destination came to listen on it.)
 */
export async function migrationPort(): Promise<number> {
  return freePort();
}
