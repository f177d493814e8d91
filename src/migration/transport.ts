import net from 'node:net';
import { addon } from '../kvm/addon.js';

/** A migration URI that cannot be used; the message says which and why. */
export class MigrationTransportError extends Error {
  override name = 'MigrationTransportError';
}

export interface TcpAddress {
  readonly host: string;
  readonly port: number;
}

/** Parses QEMU-style `tcp:HOST:PORT` (`tcp:[::1]:4444` for IPv6). */
export function parseTcpUri(uri: string): TcpAddress {
  const m = /^tcp:(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(uri);
  if (m === null) throw new MigrationTransportError(`migration URI '${uri}' is not tcp:HOST:PORT`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new MigrationTransportError(`migration URI '${uri}': port ${port} is out of range`);
  return { host: m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2]!), port };
}

export interface IncomingListener {
  /** The first connection: the migration's main connection. */
  readonly connection: Promise<net.Socket>;
  readonly port: number;
  /** The next `count` connections (multifd channels), in the order they arrived. */
  next(count: number, timeoutMs: number): Promise<net.Socket[]>;
  /** Stops listening and drops connections nobody took. */
  close(): void;
}

/** Listens at `uri` for one migration (a main connection, then its channels). Fails clearly if the address is taken. */
export async function listenForMigration(uri: string): Promise<IncomingListener> {
  const { host, port } = parseTcpUri(uri);
  // Paused until a reader takes them: bulkReads() must find nothing read yet.
  const server = net.createServer({ pauseOnConnect: true });
  let resolveConnection!: (s: net.Socket) => void;
  const connection = new Promise<net.Socket>((resolve) => { resolveConnection = resolve; });
  let first = true;
  let closed = false;
  const queued: net.Socket[] = [];
  let wake: (() => void) | undefined;
  server.on('connection', (socket) => {
    socket.setNoDelay(true);
    if (first) {
      first = false;
      resolveConnection(socket);
      return;
    }
    if (closed) {
      socket.destroy();
      return;
    }
    // Later connections wait here until the receiver asks for channels (or the listener closes).
    queued.push(socket);
    wake?.();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') reject(new MigrationTransportError(`cannot listen on ${uri}: the port is in use; choose another port`));
      else if (e.code === 'EADDRNOTAVAIL') reject(new MigrationTransportError(`cannot listen on ${uri}: no local interface has that address`));
      else reject(new MigrationTransportError(`cannot listen on ${uri}: ${e.message}`));
    });
    server.listen(port, host, () => resolve());
  });
  return {
    connection,
    port: (server.address() as net.AddressInfo).port,
    async next(count, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (queued.length < count) {
        if (closed) throw new MigrationTransportError('the incoming listener was closed');
        const left = deadline - Date.now();
        if (left <= 0) throw new MigrationTransportError(`${queued.length} of ${count} connections arrived within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => { clearTimeout(timer); resolve(); };
        });
      }
      return queued.splice(0, count);
    },
    close() {
      closed = true;
      queued.splice(0).forEach((s) => s.destroy());
      server.close();
      wake?.();
    },
  };
}

/**
 * Connects to a destination's incoming port, with its peer taken for dead after `peerTimeoutMs`
 * (watchForDeadPeer; 0: the kernel's defaults).
 */
export async function connectForMigration(uri: string, peerTimeoutMs = 0, timeoutMs = 10_000): Promise<net.Socket> {
  const { host, port } = parseTcpUri(uri);
  return await new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => { socket.destroy(); reject(new MigrationTransportError(`no answer from ${uri} within ${timeoutMs} ms`)); }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      try {
        watchForDeadPeer(socket, peerTimeoutMs);
      } catch (e) {
        socket.destroy();
        reject(e);
        return;
      }
      resolve(socket);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ECONNREFUSED') reject(new MigrationTransportError(`nothing listens at ${uri}: start the destination with --incoming ${uri}`));
      else reject(new MigrationTransportError(`cannot connect to ${uri}: ${e.message}`));
    });
  });
}

/**
 * Takes a connection's bytes as they arrive: `chunk` is valid only during the call when `transient`
 * (it lies in a read buffer that the next read reuses), so whatever must outlive the call is copied.
 */
export type ChunkSink = (chunk: Buffer, transient: boolean) => void;

/** Bytes per read of a bulkReads() connection: more than a whole RAM record (3 MiB, ram-record.ts). */
const BULK_READ_BYTES = 4 << 20;

/**
 * Where a bulkReads() connection's next read goes (see ReadPlacement): straight into `view` (guest
 * memory lent for it), or into the connection's own read buffer, `maxBytes` of it at most.
 */
export type ReadTarget = { readonly view: Uint8Array } | { readonly maxBytes: number };

/**
 * Chooses, read by read, where a bulkReads() connection's bytes land, so that a reader that knows
 * what comes next can have it read where it belongs instead of copying it there (readChunks).
 */
export interface ReadPlacement {
  /** Asked after each read, for the next. A view must not be empty; maxBytes must be positive. */
  next(): ReadTarget;
  /** The last read landed these bytes at the start of the view that next() gave; the sink is not called for them. */
  landed(bytes: Uint8Array): void;
  /**
   * Asked after each read: bytes the peer has already begun to send and sends whole, without waiting
   * for anything from this side (the rest of a record it writes in one piece), and that are not read
   * yet. The kernel then wakes the reader only once that many have come (READ_WAKE_MAX_BYTES at most).
   * INVARIANT: never more than the peer sends before it waits for an answer, or the reader sleeps
   * until the connection ends. 0 (or no method) when unsure.
   */
  committed?(): number;
}

/**
 * The most bytes a bulkReads() connection waits for before the kernel wakes its reader
 * (SO_RCVLOWAT, set from ReadPlacement.committed). Without it the reader is woken for every segment
 * loopback delivers (64 KiB), and on loopback the wake-ups are the sender's work, done in its write():
 * sock_def_readable was 6% of the source's samples in a 1 GiB full-RAM migration (perf, kvm_pvm).
 * Alternated 1 GiB full-RAM migrations on kvm_pvm (8 a side, destination RAM populated beforehand so
 * that the host's memory did not decide the time): median 343 ms with 1 MiB, 370 with 256 KiB, 365
 * without; 10 more a side, 339 against 350. A larger value makes the kernel raise the receive buffer
 * and clamp the window to it (tcp_set_rcvlowat): the sender then waits for the reader more often.
 */
export const READ_WAKE_MAX_BYTES = 1 << 20;

/** SOL_SOCKET and SO_RCVLOWAT (asm-generic/socket.h). */
const SOL_SOCKET = 1;
const SO_RCVLOWAT = 18;

/** bulkReads() connections, and where their reads go (set by readChunks). */
const bulkSinks = new WeakMap<net.Socket, BulkState>();

interface BulkState {
  sink: ChunkSink | undefined;
  placement: ReadPlacement | undefined;
  early: Buffer[];
}

/**
 * The same plain TCP connection, read in large reads into one reused buffer (Node's `onread`) instead
 * of a fresh 64 KiB Buffer per read pushed through the stream machinery. Receiving 512 MiB sent in
 * 1 MiB writes over loopback on this host took the receiver 580-600 ms of CPU as 'data' events and
 * 70-120 ms this way; in nested KVM the stream machinery and record assembly were ~4 of the
 * destination's ~29 busy seconds (bench/migrate, --cpu-prof). Node offers `onread` only to sockets it
 * creates from an fd, so this wraps a duplicate of the accepted socket's fd (read from Node's internal
 * handle; without one the socket is returned as it is) and closes the original, which must not have
 * read anything yet (listenForMigration hands connections out paused). Read it with readChunks, which
 * may also place reads elsewhere (ReadPlacement): Node asks `onread.buffer`, a function, for the
 * buffer of every next read.
 */
export function bulkReads(socket: net.Socket): net.Socket {
  const fd = socketFd(socket);
  if (fd === undefined) return socket;
  const copy = addon().dup(fd);
  socket.destroy();
  const state: BulkState = { sink: undefined, placement: undefined, early: [] };
  // Written through now: before SWITCHOVER only each record's start lands here (its data goes
  // straight into guest RAM), so most of it is first written by the switch-over's tail, in the
  // guest's downtime. Fresh memory on a host that hands freed memory back to its hypervisor costs a
  // fault per page there (0.5-2 s per GiB on kvm_pvm): a 4 GiB dirtying guest's last 2.5-3.5 MiB of
  // pages took 2.5-3.5 ms to read into it.
  const buffer = Buffer.allocUnsafe(BULK_READ_BYTES).fill(0);
  let wakeAt = 1; // SO_RCVLOWAT now: the kernel's default
  /** The kernel holds the reader asleep until `bytes` have come (SO_RCVLOWAT). */
  const wakeFor = (bytes: number) => {
    if (bytes === wakeAt) return;
    try {
      addon().setsockoptInt(copy, SOL_SOCKET, SO_RCVLOWAT, bytes);
      wakeAt = bytes;
    } catch {
      // The connection is closing (its next read says so); the threshold no longer matters.
    }
  };
  /** After each read: asleep until the bytes committed to the reader have come. */
  const wakeForCommitted = () => {
    let bytes = 1;
    try {
      bytes = Math.max(1, Math.min(state.placement?.committed?.() ?? 1, READ_WAKE_MAX_BYTES));
    } catch {
      // As in nextBuffer: called where a throw would end the process. Woken for every byte is always safe.
    }
    wakeFor(bytes);
  };
  const nextBuffer = (): Uint8Array => {
    let target: ReadTarget | undefined;
    try {
      target = state.placement?.next();
    } catch (e) {
      // Called by Node outside any code of ours, where a throw would end the process. Reads that are
      // not placed reach the sink, which takes every byte in order: nothing is lost by dropping it.
      process.stderr.write(`tsvmm: placing a read failed, reading into the connection's buffer from now on: ${e instanceof Error ? e.message : String(e)}\n`);
      state.placement = undefined;
    }
    if (target === undefined) return buffer;
    if ('view' in target) return target.view;
    return target.maxBytes >= buffer.length ? buffer : buffer.subarray(0, target.maxBytes);
  };
  // Node takes `onread` in the Socket constructor too, though @types/node lists it only for connect().
  const options: net.SocketConstructorOpts & { onread: { buffer: () => Uint8Array; callback: (n: number, buf: Uint8Array) => boolean } } = {
    fd: copy, readable: true, writable: true,
    onread: {
      buffer: nextBuffer,
      callback: (n: number, buf: Uint8Array) => {
        if (buf.buffer !== buffer.buffer) {
          state.placement!.landed(buf.subarray(0, n));
          wakeForCommitted();
          return true;
        }
        const chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
        // The threshold was set for bytes this read has taken: a sink that waits awake for what follows
        // (spinUntilReadable polls) would not see fewer than that many more come.
        wakeFor(1);
        if (state.sink !== undefined) state.sink(chunk, true);
        else state.early.push(Buffer.from(chunk)); // nobody reads yet: keep a copy
        wakeForCommitted();
        return true; // keep reading (false would pause the socket)
      },
    },
  };
  const bulk = new net.Socket(options as net.SocketConstructorOpts);
  bulk.setNoDelay(true);
  bulkSinks.set(bulk, state);
  return bulk;
}

/** SOL_SOCKET's SO_KEEPALIVE; IPPROTO_TCP and its keepalive and user-timeout options (asm-generic/socket.h, linux/tcp.h). */
const SO_KEEPALIVE = 9;
const IPPROTO_TCP = 6;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
const TCP_USER_TIMEOUT = 18;

/** x-peer-timeout's default, in ms: as long as libvirt's keepalive takes to give up on a peer (5 probes 5 s apart, after 5 s). */
export const DEFAULT_PEER_TIMEOUT_MS = 30_000;

/**
 * Has the kernel fail `socket` (ETIMEDOUT) once its peer has acknowledged nothing for `timeoutMs`:
 * data written and not acknowledged (TCP_USER_TIMEOUT), and, while nothing is written (a source
 * waiting for LOADED, a destination for the next record), keepalive probes every timeoutMs / 5
 * (TCP_USER_TIMEOUT then decides when to give up on them, tcp(7)). Without it a peer whose host dies
 * or drops off the network, so that no reset ever comes, keeps the other side waiting until TCP gives
 * up on its retransmissions (~15 min) or, with nothing in flight, for ever: a source whose
 * switch-over had begun, with its guest stopped. A peer process that is alive but stuck is not dead
 * to TCP (its kernel answers): that is migrate_cancel's. 0: the kernel's defaults. Set on the plain
 * TCP socket, before any TLS or bulkReads() wrapping (the options belong to the socket, which a dup
 * shares).
 */
export function watchForDeadPeer(socket: net.Socket, timeoutMs: number): void {
  if (timeoutMs <= 0) return;
  const fd = socketFd(socket);
  if (fd === undefined) throw new MigrationTransportError('cannot set a peer timeout on this connection: it has no socket descriptor of its own');
  const native = addon();
  const probeSeconds = Math.max(1, Math.round(timeoutMs / 5000));
  native.setsockoptInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
  native.setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPIDLE, probeSeconds);
  native.setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPINTVL, probeSeconds);
  native.setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPCNT, 5);
  native.setsockoptInt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, timeoutMs);
}

/**
 * The errors an established connection gets when its peer stops acknowledging and the timeout gives
 * up on it: ETIMEDOUT, or the last ICMP error the retransmissions met (tcp_write_err reports the soft
 * error), such as EHOSTUNREACH once the neighbour entry of a host gone from the link has failed. An
 * established TCP connection takes ICMP unreachables as soft errors only (RFC 1122), so none of these
 * ends one before the timeout.
 */
const PEER_TIMEOUT_CODES = new Set(['ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN']);

/**
 * A migration connection's error as a migration reports it: one the peer timeout raised
 * (watchForDeadPeer) says so, naming the `peer` and the parameter; a reset or a write to a connection
 * the peer has closed (its process ended, or gave up on the migration) says that; others as they are.
 */
export function connectionErrorText(e: Error, peer: 'source' | 'destination', peerTimeoutMs: number): string {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (PEER_TIMEOUT_CODES.has(code) && peerTimeoutMs > 0) {
    return `the ${peer} acknowledged nothing for ${peerTimeoutMs} ms (x-peer-timeout), so it is taken for dead (${e.message})`;
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') return `the ${peer} closed the connection (${e.message})`;
  return e.message;
}

/**
 * The file descriptor behind a plain TCP socket, read from Node's internal handle; undefined for one
 * without a descriptor of its own (TLS, or a handle Node does not expose).
 */
function socketFd(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return fd === undefined || fd < 0 ? undefined : fd;
}

/**
 * Sends every byte `socket` receives from now on (and any it holds) to `sink`, and lets it flow. On a
 * bulkReads() connection, `placement` (if given) chooses where each read lands from the second on
 * (the next read's buffer is chosen already); the bytes it places in a view of its own go to it, not
 * to `sink`.
 */
export function readChunks(socket: net.Socket, sink: ChunkSink, placement?: ReadPlacement): void {
  const bulk = bulkSinks.get(socket);
  if (bulk === undefined) {
    socket.on('data', (chunk: Buffer) => sink(chunk, false));
  } else {
    bulk.sink = sink;
    bulk.placement = placement;
    for (const chunk of bulk.early.splice(0)) sink(chunk, false);
  }
  socket.resume();
}

/** struct pollfd.events POLLIN. */
const POLLIN = 1;
const POLLFD_BYTES = 8;

/**
 * How long one side of a switch-over waits awake for the other (spinUntilReadable): the destination
 * for the source's tail after SWITCHOVER, the source for LOADED after END. On kvm_pvm the source's
 * capture and encode take ~0.6 ms and the destination's load ~0.5 ms; a slower host falls back to
 * sleeping after this, having spent a few milliseconds of one CPU.
 */
export const SWITCHOVER_SPIN_MS = 5;

/**
 * Waits awake, without returning to the event loop, until one of `sockets` has bytes to read or
 * `maxMs` has passed; returns whether one has. The event loop then reads them at once.
 *
 * Why: the switch-over's hops between source and destination (the tail, LOADED) come while the guest
 * is stopped, and a process asleep in epoll takes long to wake on a virtualised host. On this kvm_pvm
 * host (a VM whose idle vCPUs halt at once: haltpoll with guest_halt_poll_ns 0), the destination woke
 * for the tail 0.35-1 ms after the source wrote it, and the source for LOADED 0.1-1 ms; spinning,
 * 0.04-0.07 ms and 0.07-0.16 ms (TSVMM_TRACE_PHASES=2, bench/migrate idle 1 GiB).
 *
 * INVARIANT: every turn yields the CPU (sched_yield). On two CPUs the scheduler may put both ends on
 * one; a spinner that did not yield took it from the source for a whole time slice (its capture took
 * 1.5 ms instead of 0.35, and LOADED was read 1 ms late). Under CFS a yield gives way only to a thread
 * not far behind in virtual runtime, so it is no guarantee: keep the spins short and few.
 *
 * With maxMs 0 it polls once and never yields: a caller checking in passing decides itself when to
 * give way (rehearseTail yields before each piece of its rehearsal, and stops once the tail has come).
 * When this check yielded on its own, the rehearsal after it ran whole, 0.9-1 ms after an idle guest's
 * SWITCHOVER instead of 0.35, and a tail that came meanwhile waited for it.
 *
 * A socket without a file descriptor of its own (TLS) is not watched; with none left this returns false
 * at once, and the caller sleeps in the event loop as usual.
 */
export function spinUntilReadable(sockets: readonly net.Socket[], maxMs: number): boolean {
  const fds = sockets.map(socketFd).filter((fd): fd is number => fd !== undefined);
  if (fds.length === 0) return false;
  const pollfds = new Uint8Array(fds.length * POLLFD_BYTES);
  const view = new DataView(pollfds.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(i * POLLFD_BYTES, fd, true);
    view.setInt16(i * POLLFD_BYTES + 4, POLLIN, true);
  });
  const native = addon();
  const deadline = performance.now() + maxMs;
  for (;;) {
    if (native.poll(pollfds, 0) > 0) return true;
    if (performance.now() >= deadline) return false;
    native.schedYield();
  }
}

/**
 * Reads what the kernel holds for a plain TCP `socket` now, into `into`, without the event loop: the
 * byte count (0 when nothing has come yet, or the stream has ended), or undefined for a socket without
 * a descriptor of its own (TLS). The bytes are the caller's: Node never sees them, and sees the
 * stream go on after them. For a reply waited for awake (spinUntilReadable), which the event loop
 * would read only after a turn: on kvm_pvm the source read LOADED 0.28 ms (median of 12) after its
 * spin had seen it come. An error is not thrown here: the connection's next read, Node's, meets its
 * end (a reset shows as the destination closing the connection).
 */
export function readAvailable(socket: net.Socket, into: Uint8Array): number | undefined {
  const fd = socketFd(socket);
  if (fd === undefined) return undefined;
  try {
    return addon().read(fd, into); // libuv keeps its sockets non-blocking
  } catch {
    return 0;
  }
}

/**
 * How long a destination that has sent LOADED waits awake for COMMIT (spinUntilReadable): a source
 * waiting awake for LOADED answers in ~0.1-0.2 ms on kvm_pvm; one that is not (with VERIFY) is
 * waited for asleep after this.
 */
export const COMMIT_SPIN_MS = 2;

/**
 * How long the source gives way after writing COMMIT (giveWay): the destination reads it and starts
 * the guest in ~0.1-0.2 ms on kvm_pvm.
 */
export const COMMIT_GIVE_WAY_MS = 1;

/**
 * Yields the CPU to any thread that wants it, once and then until `ms` have passed, without sleeping:
 * the CPU stays awake for a thread that is about to need it. For a side whose next work can wait while
 * the other side's cannot, on a host they may share (the source after COMMIT; the destination between
 * the pieces of its rehearsal, with ms 0). On this kvm_pvm host a CPU left idle halts at once and
 * takes 0.3-1 ms to wake; a thread that kept working took the CPU the other side needed.
 */
export function giveWay(ms: number): void {
  const native = addon();
  const until = performance.now() + ms;
  do native.schedYield();
  while (performance.now() < until);
}
