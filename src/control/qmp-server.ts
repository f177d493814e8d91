/**
 * A QMP server (QEMU docs/interop/qmp-spec.rst) in front of a VmControl, on a unix socket or TCP.
 *
 *   client                                  server
 *     |  <-- {"QMP": {"version", "capabilities": []}}    greeting, at connect
 *     |  --> {"execute": "qmp_capabilities"}             anything else first: CommandNotFound
 *     |  <-- {"return": {}}
 *     |  --> {"execute": "migrate", "arguments": {"uri": "tcp:10.0.0.2:4444"}, "id": 7}
 *     |  <-- {"return": {}, "id": 7}
 *     |  <-- {"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {...}}   at any time
 *
 * Commands on one connection run one at a time, in order, as QEMU runs them without OOB. The server
 * answers everything a client can send, garbage included, with a QMP error: nothing from the socket may
 * throw past it, because an exception here would take the VM down with it.
 */
import { lstatSync, readFileSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { packageRoot } from '../kvm/addon.js';
import { formatSocketAddress, toSocketAddress, type SocketAddress } from './qmp-address.js';
import { checkedCommand, errorBody, isPlainObject, type QmpSession } from './qmp-commands.js';
import { JsonStreamSplitter, type JsonFrame } from './qmp-json-stream.js';
import type { VmControl, VmEvent } from './vm-control.js';

/**
 * The QEMU release whose QMP dialect tsvmm speaks (7.2: `query-status` still has `singlestep`,
 * `migrate` still takes `blk`/`inc`/`detach`). Clients such as libvirt and python qemu.qmp look at it.
 */
const QEMU_COMPAT_VERSION = { micro: 0, minor: 2, major: 7 } as const;

/**
 * A client that stops reading (events pile up in its socket buffer) is disconnected beyond this
 * backlog, rather than letting it grow the VMM's heap without bound.
 */
const MAX_OUTPUT_BACKLOG_BYTES = 16 * 1024 * 1024;

/** How long close() waits for a client's unsent output to drain before cutting the connection. */
const FLUSH_LIMIT_MS = 1000;

/** Commands one client may have waiting before the server stops reading from it. */
const MAX_QUEUED_COMMANDS = 64;

/** The server could not bind its address; the message names the address and the reason. */
export class QmpListenError extends Error {
  override name = 'QmpListenError';
}

export interface QmpServerOptions {
  /** Goes into the greeting's "package" as `tsvmm VERSION`; read from package.json when absent. */
  packageVersion?: string;
  /** Where failures that have no client to answer go (a `quit` that failed); default stderr. */
  log?: (message: string) => void;
}

/**
 * `message` as one line of JSON. A BigInt in a VmControl answer, or an id nested beyond the stack,
 * becomes an error reply instead of a dropped one, keeping the id if it alone can be encoded, so the
 * client is not left waiting.
 */
function encodeLine(message: object): string {
  try {
    return JSON.stringify(message) + '\n';
  } catch (e) {
    const error = { class: 'GenericError', desc: `cannot encode the answer: ${(e as Error).message}` };
    const id = (message as { id?: unknown }).id;
    try {
      return JSON.stringify(id === undefined ? { error } : { error, id }) + '\n';
    } catch {
      return JSON.stringify({ error }) + '\n';
    }
  }
}

/** QMP timestamps are wall-clock seconds and microseconds (qmp-spec.rst, "Asynchronous events"): of `at`, else of now. */
function timestamp(at = performance.timeOrigin + performance.now()): { seconds: number; microseconds: number } {
  const us = Math.floor(at * 1000);
  return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
}

function readPackageVersion(): string {
  try {
    return (JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown'; // the greeting is informational; a missing package.json must not stop the VM
  }
}

/** One client: its framing state, negotiation state and command queue. */
class Connection implements QmpSession {
  negotiated = false;
  private readonly splitter = new JsonStreamSplitter();
  /** INVARIANT: never rejects, so the chain of commands cannot break. */
  private queue: Promise<void> = Promise.resolve();
  private queued = 0;
  private hungUp = false;
  /** What send() (lines) and sendEvent() (events, not yet encoded) queued for writeOut, and the `flushed` callbacks. */
  private unwritten: (string | object)[] = [];
  private unwrittenFlushed: (() => void)[] = [];
  private writeScheduled = false;

  constructor(readonly server: QmpServer, private readonly socket: net.Socket, private readonly control: VmControl) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.receive(text));
    // Peers vanish (ECONNRESET, EPIPE): the connection ends, the VM does not notice.
    socket.on('error', () => socket.destroy());
    this.send({ QMP: { version: server.version, capabilities: [] } });
  }

  /**
   * Writes one message line; `flushed` runs once the kernel has it (or the socket is gone). Lines go
   * out in order, on the next turn of the event loop rather than now: an event raised inside a
   * migration's switch-over (MIGRATION 'device', STOP) woke the client at once, and on a 2-CPU host
   * the client took the CPU the switch-over ran on, 0.2-2.5 ms of the guest's downtime (kvm_pvm).
   * QEMU's monitor likewise writes its events after the migration thread has moved on; each keeps
   * the timestamp of the moment it happened (QmpServer.broadcast).
   */
  send(message: object, flushed?: () => void): void {
    if (this.socket.destroyed) return flushed?.();
    this.enqueue(encodeLine(message), flushed);
  }

  /**
   * send() for an event, encoded when it is written rather than now (the switch-over's STOP costs
   * only its timestamp then). The caller never changes `event` afterwards.
   */
  sendEvent(event: object): void {
    if (this.socket.destroyed) return;
    this.enqueue(event);
  }

  private enqueue(line: string | object, flushed?: () => void): void {
    this.unwritten.push(line);
    if (flushed !== undefined) this.unwrittenFlushed.push(flushed);
    if (!this.writeScheduled) {
      this.writeScheduled = true;
      setImmediate(() => this.writeOut());
    }
  }

  /** Writes what send() and sendEvent() queued, as one write. */
  private writeOut(): void {
    this.writeScheduled = false;
    const lines = this.unwritten;
    const callbacks = this.unwrittenFlushed;
    this.unwritten = [];
    this.unwrittenFlushed = [];
    if (this.socket.destroyed) {
      for (const f of callbacks) f();
      return;
    }
    if (lines.length === 0) return;
    const text = lines.map((l) => (typeof l === 'string' ? l : encodeLine(l))).join('');
    this.socket.write(text, callbacks.length === 0 ? undefined : () => { for (const f of callbacks) f(); });
    if (this.socket.writableLength > MAX_OUTPUT_BACKLOG_BYTES) this.socket.destroy();
  }

  /**
   * Ends the connection after what was already written (a last event, a `quit` answer) has been
   * flushed; a peer that does not read is cut off after FLUSH_LIMIT_MS.
   */
  close(): void {
    this.writeOut();
    const cutOff = setTimeout(() => this.socket.destroy(), FLUSH_LIMIT_MS);
    cutOff.unref();
    this.socket.end(() => { clearTimeout(cutOff); this.socket.destroy(); });
  }

  private receive(text: string): void {
    if (this.hungUp) return;
    let frames: JsonFrame[];
    try {
      frames = this.splitter.push(text);
    } catch (e) {
      // The stream cannot be resynchronised past an oversized value: answer, then hang up.
      this.hungUp = true;
      this.send({ error: { class: 'GenericError', desc: (e as Error).message } }, () => this.socket.destroy());
      return;
    }
    for (const frame of frames) {
      this.queued++;
      this.queue = this.queue
        .then(() => this.dispatch(frame))
        .catch((e: unknown) => this.server.log(`internal error answering a client: ${(e as Error).message}`))
        .then(() => this.dequeued());
    }
    // Like QEMU's monitor_suspend: while commands wait, stop reading, so a client flooding requests
    // behind a slow one fills its own socket buffer instead of this process's heap.
    if (this.queued > MAX_QUEUED_COMMANDS) this.socket.pause();
  }

  private dequeued(): void {
    if (--this.queued === 0 && this.socket.isPaused()) this.socket.resume();
  }

  private async dispatch(frame: JsonFrame): Promise<void> {
    if (!frame.ok) return this.send({ error: { class: 'GenericError', desc: frame.error } });
    const request = frame.value;
    const id = isPlainObject(request) && Object.hasOwn(request, 'id') ? request.id : undefined;
    const reply = (body: object, flushed?: () => void) => this.send(id === undefined ? body : { ...body, id }, flushed);
    try {
      const { name, command, args } = checkedCommand(request, this.negotiated);
      if (name === 'quit') return this.quit(reply);
      const result = await command.run(args, this.control, this);
      if (name === 'qmp_capabilities') this.negotiated = true;
      reply({ return: result ?? {} });
    } catch (e) {
      reply({ error: errorBody(e) });
    }
  }

  /** `quit` answers first, as QEMU does, so the client sees success before the socket goes away. */
  private quit(reply: (body: object, flushed: () => void) => void): void {
    reply({ return: {} }, () => {
      // A synchronous throw would escape into the socket's write callback: route both kinds to the log.
      Promise.resolve().then(() => this.control.quit())
        .catch((e: unknown) => this.server.log(`quit failed: ${e instanceof Error ? e.message : String(e)}`));
    });
  }
}

export class QmpServer {
  private readonly connections = new Set<Connection>();
  private readonly unsubscribe: () => void;
  readonly version: { qemu: typeof QEMU_COMPAT_VERSION; package: string };
  readonly log: (message: string) => void;

  private constructor(private readonly server: net.Server, readonly address: SocketAddress, control: VmControl, options: QmpServerOptions) {
    this.version = { qemu: QEMU_COMPAT_VERSION, package: `tsvmm ${options.packageVersion ?? readPackageVersion()}` };
    this.log = options.log ?? ((m) => process.stderr.write(`tsvmm: qmp: ${m}\n`));
    server.on('connection', (socket) => {
      const c = new Connection(this, socket, control);
      this.connections.add(c);
      socket.on('close', () => this.connections.delete(c));
    });
    this.unsubscribe = control.onEvent((e) => this.broadcast(e));
  }

  /** Listens on `unix:PATH` or `tcp:HOST:PORT` (port 0: any free port, see `address`). */
  static async listen(address: string | SocketAddress, control: VmControl, options: QmpServerOptions = {}): Promise<QmpServer> {
    const where = toSocketAddress(address, { listening: true });
    const server = net.createServer();
    // A connection's own errors are handled per socket; this keeps a server-level error from being fatal.
    server.on('error', () => {});
    await bind(server, where);
    const bound = server.address();
    const actual: SocketAddress = where.kind === 'tcp' && typeof bound === 'object' && bound !== null ? { ...where, port: bound.port } : where;
    return new QmpServer(server, actual, control, options);
  }

  /** Pushes an event to every client that finished negotiation (qmp-spec: none before). */
  private broadcast(e: VmEvent): void {
    const at = timestamp(e.at);
    const message = e.data === undefined ? { event: e.event, timestamp: at } : { event: e.event, data: e.data, timestamp: at };
    for (const c of this.connections) if (c.negotiated) c.sendEvent(message);
  }

  /**
   * Stops listening, ends every client's connection, and removes a unix socket file. With `graceMs`,
   * clients still connected get that long to hang up by themselves first and can still run commands:
   * a source that just migrated away lets `tsvmm migrate` read the final query-migrate this way.
   */
  async close({ graceMs = 0 }: { graceMs?: number } = {}): Promise<void> {
    // Resolves once the listener is closed and every connection has ended; libuv unlinks the unix path.
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (graceMs > 0 && this.connections.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs); })]);
      clearTimeout(timer);
    }
    this.unsubscribe();
    for (const c of this.connections) c.close();
    await closed;
  }
}

async function bind(server: net.Server, where: SocketAddress): Promise<void> {
  const listen = () => new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => { server.off('error', reject); resolve(); };
    if (where.kind === 'unix') server.listen(where.path, done);
    else server.listen(where.port, where.host, done);
  });
  try {
    await listen();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (where.kind === 'unix' && code === 'EADDRINUSE' && (await isStaleSocket(where.path))) {
      // Left by a tsvmm that was killed: nothing answers there, so take the path over, as QEMU does.
      unlinkSync(where.path);
      try {
        return await listen();
      } catch (e2) {
        e = e2;
      }
    }
    const why = code === 'EADDRINUSE' ? 'EADDRINUSE, another process is listening there' : (e as Error).message;
    throw new QmpListenError(`cannot listen for QMP on ${formatSocketAddress(where)}: ${why}`, { cause: e });
  }
}

/** A socket file nobody accepts on. A path that is not a socket is never considered stale (never unlinked). */
async function isStaleSocket(file: string): Promise<boolean> {
  try {
    if (!lstatSync(file).isSocket()) return false;
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    const probe = net.connect(file);
    probe.once('connect', () => { probe.destroy(); resolve(false); });
    probe.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

// ---------------------------------------------------------------------------------------------
