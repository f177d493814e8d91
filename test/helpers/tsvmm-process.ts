import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CLI } from './paths.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A real `tsvmm run` process with its console in a file and QMP on a unix socket. */
export class TsvmmProcess {
  readonly consoleFile: string;
  readonly qmpPath: string;
  stderr = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(args: string[], name: string) {
    const dir = mkdtempSync(path.join(tmpdir(), `tsvmm-${name}-`));
    this.consoleFile = path.join(dir, 'console');
    this.qmpPath = path.join(dir, 'qmp.sock');
    this.child = spawn(process.execPath, [CLI, 'run', ...args, '--serial', `file:${this.consoleFile}`, '--qmp', `unix:${this.qmpPath}`], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    this.child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exited = new Promise((resolve) => this.child.on('close', (status) => resolve(status)));
  }

  console(): string {
    return existsSync(this.consoleFile) ? readFileSync(this.consoleFile, 'utf8') : '';
  }

  /** Types into the guest's serial console (stdin). */
  type(text: string): void {
    this.child.stdin!.write(text);
  }

  async waitFor(what: () => boolean, label: string, timeoutMs = 60_000): Promise<void> {
    const t0 = Date.now();
    while (!what()) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${label}; stderr: ${this.stderr}; console: ${this.console().slice(-300)}`);
      await sleep(20);
    }
  }

  async waitForConsole(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray> {
    await this.waitFor(() => pattern.test(this.console()), `console ${pattern}`, timeoutMs);
    return pattern.exec(this.console())!;
  }

  async waitForQmp(): Promise<void> {
    await this.waitFor(() => existsSync(this.qmpPath), 'the QMP socket');
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null) this.child.kill(signal);
  }
}

let nextPort = 47000 + (process.pid % 1000) * 10;
/** A loopback port for a migration stream (distinct per call within a test run). */
export function migrationPort(): number {
  return nextPort++;
}
