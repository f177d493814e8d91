import type { PageRange } from '../memory/dirty-bitmap.js';
import { Worker } from 'node:worker_threads';
import { threadScript } from '../kvm/thread-script.js';
import type { ChannelThreadData, FromChannel, ToChannel } from './multifd-channel-thread.js';
import type { TlsCredsX509 } from './tls.js';

export const CHANNEL_THREAD_SCRIPT = threadScript('multifd-channel-thread', 'migration/multifd-channel-thread.js');
/** Batches a channel may hold unsent: enough to keep its socket busy, few enough to bound memory (~3 MiB each, BATCH_PAGES). */
const CREDITS_PER_CHANNEL = 4;

/** A channel failed; the migration fails with this. */
export class MultifdChannelError extends Error {
  override name = 'MultifdChannelError';
}

interface Channel {
  readonly worker: Worker;
  credits: number;
}

/**
 * The sending side's multifd channels: one worker thread per channel (multifd-channel-thread.ts).
 * `send` gives a batch of pages to the channel with the most credit, waiting while all are full;
 * `sync` has every channel send SYNC for a pass and resolves when all have.
 */
export class MultifdChannels {
  bytesSent = 0;
  zeroPages = 0;
  dataPages = 0;
  private error: MultifdChannelError | undefined;
  private waiters: (() => void)[] = [];
  private synced = new Map<number, number>();
  private closed = false;

  private constructor(private readonly channels: Channel[]) {
    for (const ch of channels) {
      ch.worker.on('message', (m: FromChannel) => this.onMessage(ch, m));
      ch.worker.on('error', (e) => this.failWith(`multifd channel thread failed: ${e.message}`));
    }
  }

  /**
   * Starts `count` channel threads; once every one is ready (loaded, RAM mapped), runs `announce`
   * (the sender's MULTIFD record: the destination starts waiting for the channels then), tells them
   * to connect to `uri`, and resolves when all are connected.
   */
  static async open(opts: {
    uri: string; count: number; session: Uint8Array;
    regions: readonly { hva: bigint; sizeBytes: number }[];
    tls?: { creds: TlsCredsX509; hostname: string };
    /** x-peer-timeout for each channel's connection (transport.ts, watchForDeadPeer); 0 or absent: none. */
    peerTimeoutMs?: number;
  }, announce: () => Promise<void> = async () => {}): Promise<MultifdChannels> {
    const channels: Channel[] = [];
    const awaitMessage = (worker: Worker, type: 'ready' | 'connected') => new Promise<void>((resolve, reject) => {
      const onMessage = (m: FromChannel) => {
        if (m.type === type) resolve();
        else if (m.type === 'error') reject(new MultifdChannelError(m.message));
        else return;
        worker.off('message', onMessage);
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
    });
    const ready: Promise<void>[] = [];
    for (let index = 0; index < opts.count; index++) {
      const data: ChannelThreadData = { uri: opts.uri, index, session: opts.session, regions: opts.regions, tls: opts.tls, peerTimeoutMs: opts.peerTimeoutMs ?? 0 };
      const worker = new Worker(CHANNEL_THREAD_SCRIPT, { workerData: data });
      channels.push({ worker, credits: CREDITS_PER_CHANNEL });
      ready.push(awaitMessage(worker, 'ready'));
    }
    try {
      await Promise.all(ready);
      await announce();
      const connected = channels.map((ch) => awaitMessage(ch.worker, 'connected'));
      for (const ch of channels) ch.worker.postMessage({ type: 'connect' } satisfies ToChannel);
      await Promise.all(connected);
    } catch (e) {
      await Promise.all(channels.map((c) => c.worker.terminate()));
      throw e instanceof MultifdChannelError ? e : new MultifdChannelError(`multifd channel thread failed: ${(e as Error).message}`, { cause: e });
    }
    return new MultifdChannels(channels);
  }

  get count(): number {
    return this.channels.length;
  }

  /** Queues one batch of a region's pages on a channel; resolves once a channel took it. */
  async send(region: number, pages: ArrayLike<number>, zeroRuns: readonly PageRange[] = []): Promise<void> {
    for (;;) {
      this.check();
      let best: Channel | undefined;
      for (const ch of this.channels) if (ch.credits > 0 && (best === undefined || ch.credits > best.credits)) best = ch;
      if (best !== undefined) {
        best.credits--;
        const list = Uint32Array.from(pages);
        best.worker.postMessage({ type: 'batch', region, pages: list, zeroRuns } satisfies ToChannel, [list.buffer]);
        return;
      }
      await this.wait();
    }
  }

  /** Every channel sends SYNC `pass` after the batches it was given; resolves when all have. */
  async sync(pass: number): Promise<void> {
    this.synced.set(pass, 0);
    for (const ch of this.channels) ch.worker.postMessage({ type: 'sync', pass } satisfies ToChannel);
    while ((this.synced.get(pass) ?? 0) < this.channels.length) {
      this.check();
      await this.wait();
    }
    this.synced.delete(pass);
  }

  /** After success: each channel finishes its writes and closes its connection. */
  close(): void {
    this.closed = true;
    for (const ch of this.channels) ch.worker.postMessage({ type: 'end' } satisfies ToChannel);
  }

  /** After failure: stops every channel at once. */
  async destroy(): Promise<void> {
    this.closed = true;
    await Promise.all(this.channels.map((c) => c.worker.terminate()));
  }

  private onMessage(ch: Channel, m: FromChannel): void {
    switch (m.type) {
      case 'sent':
        ch.credits++;
        this.bytesSent += m.bytes;
        this.zeroPages += m.zero;
        this.dataPages += m.data;
        break;
      case 'synced':
        this.synced.set(m.pass, (this.synced.get(m.pass) ?? 0) + 1);
        break;
      case 'error':
        if (!this.closed) this.failWith(m.message);
        break;
      case 'connected':
        return;
    }
    this.wakeAll();
  }

  private failWith(message: string): void {
    this.error ??= new MultifdChannelError(message);
    this.wakeAll();
  }

  private check(): void {
    if (this.error !== undefined) throw this.error;
  }

  private wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wakeAll(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }
}
