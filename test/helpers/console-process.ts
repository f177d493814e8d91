import { spawn, type ChildProcess } from 'node:child_process';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A VMM process (tsvmm or QEMU) with the guest's serial console on stdio: typed into, read back. */
export class ConsoleProcess {
  stderr = '';
  private stdout = '';
  /** Exit status (null if killed by a signal). */
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(command: string, args: string[], env: Record<string, string> = {}) {
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
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

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null) this.child.kill(signal);
  }
}
