import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CLI } from './paths.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A real `tsvmm run` process with its serial console on stdio (typed into, read back) and QMP on a unix socket. */
export class TsvmmProcess {
  readonly qmpPath: string;
  stderr = '';
  private stdout = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  /** `prefix` runs tsvmm under another command (e.g. `ip netns exec NS`). */
  constructor(args: string[], name: string, env: Record<string, string> = {}, prefix: readonly string[] = []) {
    const dir = mkdtempSync(path.join(tmpdir(), `tsvmm-${name}-`));
    this.qmpPath = path.join(dir, 'qmp.sock');
    const command = [...prefix, process.execPath, CLI, 'run', ...args, '--qmp', `unix:${this.qmpPath}`];
    this.child = spawn(command[0]!, command.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.child.stdout!.on('data', (d: Buffer) => { this.stdout += d.toString(); });
    this.child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exited = new Promise((resolve) => this.child.on('close', (status) => resolve(status)));
  }

  /** Everything the guest has printed so far. */
  console(): string {
    return this.stdout;
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
