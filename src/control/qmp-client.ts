/**
 * A QMP client: connects, checks the greeting, negotiates, then runs commands and hands out events.
 * Used by `tsvmm migrate` and the tests; it speaks to QEMU as well as to tsvmm's QmpServer.
 *
 * Every request carries its own numeric id, so an answer arriving after its command timed out is
 * recognised and dropped instead of being taken for the answer to the next command.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { formatSocketAddress, toSocketAddress, type SocketAddress } from './qmp-address.js';
import { JsonStreamSplitter } from './qmp-json-stream.js';

/** The server refused a command: `qmpClass` and `desc` are its QMP error, verbatim. */
export class QmpError extends Error {
  override name = 'QmpError';
  constructor(readonly command: string, readonly qmpClass: string, readonly desc: string) {
    super(`${command}: ${desc}`);
  }
}

/**
 * The conversation failed rather than the command: nothing listening, the connection closed, no
 * answer in time, or the peer does not speak QMP. `code` says which, for callers that branch on it.
 */
export class QmpConnectionError extends Error {
  override name = 'QmpConnectionError';
  constructor(message: string, readonly code: 'CONNECT' | 'CLOSED' | 'TIMEOUT' | 'PROTOCOL', options?: ErrorOptions) {
    super(message, options);
  }
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpClientOptions {
  /** Limit for connecting plus negotiating, and the default limit for each command. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class QmpClient {
  private readonly emitter = new EventEmitter();
  private readonly pending = new Map<number, Pending>();
  private readonly splitter = new JsonStreamSplitter();
  private nextId = 1;
  private closedBy: QmpConnectionError | undefined;
  /** Set once the greeting arrived; read by connect(). */
  private greetingSeen: ((g: QmpGreeting) => void) | undefined;
  greeting: QmpGreeting | undefined;

  private constructor(private readonly socket: net.Socket, readonly address: string, private readonly timeoutMs: number) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.receive(text));
    socket.on('error', (e) => this.fail(new QmpConnectionError(`QMP connection to ${address} failed: ${e.message}`, 'CLOSED', { cause: e })));
    socket.on('close', () => this.fail(new QmpConnectionError(`QMP connection to ${address} closed`, 'CLOSED')));
  }

  /** Connects to `unix:PATH` or `tcp:HOST:PORT`, waits for the greeting and completes negotiation. */
  static async connect(address: string | SocketAddress, options: QmpClientOptions = {}): Promise<QmpClient> {
    const where = toSocketAddress(address);
    const text = formatSocketAddress(where);
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const socket = await open(where, text, timeoutMs);
    const client = new QmpClient(socket, text, timeoutMs);
    try {
      client.greeting = await client.waitForGreeting();
      await client.execute('qmp_capabilities');
      return client;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  /** Runs a command; resolves with its `return` value, rejects with QmpError or QmpConnectionError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, { timeoutMs = this.timeoutMs } = {}): Promise<T> {
    if (this.closedBy !== undefined) return Promise.reject(this.closedBy);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpConnectionError(`no answer from QMP at ${this.address} to '${command}' within ${timeoutMs} ms`, 'TIMEOUT'));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id }) + '\n');
    });
  }

  /** Event listener (`event`: every QMP event; `close`: the connection ended, with why). */
  on(name: 'event', listener: (e: QmpEvent) => void): this;
  on(name: 'close', listener: (e: QmpConnectionError) => void): this;
  on(name: 'event' | 'close', listener: (arg: QmpEvent & QmpConnectionError) => void): this {
    this.emitter.on(name, listener);
    return this;
  }

  off(name: 'event', listener: (e: QmpEvent) => void): this;
  off(name: 'close', listener: (e: QmpConnectionError) => void): this;
  off(name: 'event' | 'close', listener: (arg: QmpEvent & QmpConnectionError) => void): this {
    this.emitter.off(name, listener);
    return this;
  }

  /**
   * Events from now on, as an async iterator that ends when the connection closes. Events are
   * buffered until read, so a slow consumer loses none.
   */
  async *events(): AsyncGenerator<QmpEvent, void, undefined> {
    const queue: QmpEvent[] = [];
    let wake: (() => void) | undefined;
    const onEvent = (e: QmpEvent) => { queue.push(e); wake?.(); };
    const onClose = () => wake?.();
    this.on('event', onEvent).on('close', onClose);
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (this.closedBy !== undefined) return;
        await new Promise<void>((resolve) => { wake = resolve; });
        wake = undefined;
      }
    } finally {
      this.off('event', onEvent).off('close', onClose);
    }
  }

  get closed(): boolean {
    return this.closedBy !== undefined;
  }

  /** Ends the connection; commands still waiting reject with a CLOSED error. */
  close(): void {
    this.fail(new QmpConnectionError(`QMP connection to ${this.address} closed by this client`, 'CLOSED'));
    this.socket.destroy();
  }

  private waitForGreeting(): Promise<QmpGreeting> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new QmpConnectionError(`QMP at ${this.address} sent no greeting within ${this.timeoutMs} ms`, 'TIMEOUT')), this.timeoutMs);
      this.emitter.once('close', (e: QmpConnectionError) => { clearTimeout(timer); reject(e); });
      this.greetingSeen = (g) => { clearTimeout(timer); resolve(g); };
    });
  }

  private receive(text: string): void {
    let frames;
    try {
      frames = this.splitter.push(text);
    } catch (e) {
      return this.protocolError((e as Error).message);
    }
    for (const frame of frames) {
      if (!frame.ok) return this.protocolError(frame.error);
      this.handle(frame.value);
    }
  }

  private handle(message: unknown): void {
    if (typeof message !== 'object' || message === null) return this.protocolError('a message is not a JSON object');
    const m = message as Record<string, unknown>;
    if (this.greetingSeen !== undefined) {
      if (!('QMP' in m)) return this.protocolError('the first message is not a QMP greeting; is this a QMP socket?');
      const seen = this.greetingSeen;
      this.greetingSeen = undefined;
      return seen(m.QMP as QmpGreeting);
    }
    if (typeof m.event === 'string') {
      this.emitter.emit('event', m as unknown as QmpEvent);
      return;
    }
    // Answers without a known id belong to commands that already timed out, or to no one.
    const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
    if (p === undefined) return;
    this.pending.delete(m.id as number);
    clearTimeout(p.timer);
    if ('error' in m) {
      const err = (m.error ?? {}) as { class?: unknown; desc?: unknown };
      p.reject(new QmpError(p.command, String(err.class ?? 'GenericError'), String(err.desc ?? 'no description')));
    } else {
      p.resolve(m.return);
    }
  }

  private protocolError(why: string): void {
    this.fail(new QmpConnectionError(`QMP at ${this.address} broke the protocol: ${why}`, 'PROTOCOL'));
    this.socket.destroy();
  }

  /** Rejects everything waiting and marks the client closed; only the first reason is kept. */
  private fail(reason: QmpConnectionError): void {
    if (this.closedBy !== undefined) return;
    this.closedBy = reason;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new QmpConnectionError(`QMP connection to ${this.address} closed while waiting for the answer to '${p.command}'`, 'CLOSED', { cause: reason }));
    }
    this.pending.clear();
    this.emitter.emit('close', reason);
  }
}

/** Opens the socket, turning "nothing there" into a message that says what to check. */
function open(where: SocketAddress, text: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = where.kind === 'unix' ? net.connect(where.path) : net.connect(where.port, where.host);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new QmpConnectionError(`cannot connect to QMP at ${text}: no answer within ${timeoutMs} ms`, 'TIMEOUT'));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new QmpConnectionError(`cannot connect to QMP at ${text}: ${e.code ?? e.message}, is tsvmm running with --qmp ${text}?`, 'CONNECT', { cause: e }));
    });
  });
}
