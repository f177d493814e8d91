import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import path from 'node:path';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A VMM process (tsvmm or QEMU) with the guest's serial console on stdio: typed into, read back. */
export class ConsoleProcess {
  stderr = '';
  private stdout = '';
  /** Exit status (null if killed by a signal). */
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  /**
   * With TSVMM_TEST_LOG_DIR set, the process's console and stderr are also appended, as they arrive,
   * to `<dir>/<name>-<pid>.console` and `.stderr`: what a hung test's VMMs said is then on disk even
   * when the run is killed before vitest can report it.
   */
  constructor(command: string, args: string[], env: Record<string, string> = {}, name = path.basename(command)) {
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const logDir = process.env.TSVMM_TEST_LOG_DIR;
    const log = (suffix: string, d: Buffer) => { if (logDir) appendFileSync(path.join(logDir, `${name}-${this.child.pid}.${suffix}`), d); };
    this.child.stdout!.on('data', (d: Buffer) => { this.stdout += d.toString(); log('console', d); });
    this.child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); log('stderr', d); });
    this.exited = new Promise((resolve) => this.child.on('close', (status) => resolve(status)));
  }

  get pid(): number {
    return this.child.pid!;
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

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null) this.child.kill(signal);
  }
}
