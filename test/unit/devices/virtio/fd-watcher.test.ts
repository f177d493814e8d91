import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addon } from '../../../../src/kvm/addon.js';
import { EFD_CLOEXEC, EFD_NONBLOCK } from '../../../../src/kvm/constants.js';
import { KvmError } from '../../../../src/kvm/kvm-error.js';
import { FdWatcher, signalEventfd } from '../../../../src/devices/virtio/fd-watcher.js';
import { until } from './test-driver.js';

const settle = () => new Promise((r) => setTimeout(r, 20));

// The main thread's event loop watching real fds (no KVM: KVM's ioeventfd signals the same kind of fd).
describe('FdWatcher', () => {
  it('calls each eventfd\'s handler once per signal, on this thread, and stops', async () => {
    const native = addon();
    const a = native.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const b = native.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const seen: string[] = [];
    const w = new FdWatcher();
    w.watchCounter(a, () => seen.push('a'));
    w.watchCounter(b, () => seen.push('b'));
    w.start((m) => seen.push(`error ${m}`));
    signalEventfd(b);
    await until(() => seen.length === 1);
    signalEventfd(a);
    await until(() => seen.length >= 2);
    await settle();
    // Two signals before the loop looks are one wake-up (the counter is read dry), as KVM's are.
    signalEventfd(a);
    signalEventfd(a);
    await until(() => seen.length >= 3);
    await settle();
    expect(seen).toEqual(['b', 'a', 'a']);
    await w.stop();
    await w.stop(); // twice is harmless
    signalEventfd(a);
    await settle();
    expect(seen).toEqual(['b', 'a', 'a']);
    native.close(a);
    native.close(b);
  });

  it('hands each frame of a packet fd over in a buffer of its own, one read per frame', async () => {
    // A FIFO opened read-write stands in for a tap: readable while bytes wait, each read taking
    // what one write put there (written one at a time, as frames arrive).
    const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-fdwatch-'));
    try {
      const fifo = path.join(dir, 'frames');
      execFileSync('mkfifo', [fifo]);
      const native = addon();
      const fd = native.open(fifo);
      const frames: Uint8Array[] = [];
      const w = new FdWatcher();
      w.watchFrames(fd, (f) => frames.push(f));
      w.start((m) => { throw new Error(m); });
      native.write(fd, new Uint8Array([1, 2, 3]));
      await until(() => frames.length === 1);
      native.write(fd, new Uint8Array([4, 5]));
      await until(() => frames.length === 2);
      expect(frames.map((f) => [...f])).toEqual([[1, 2, 3], [4, 5]]);
      expect(frames[0]!.buffer).not.toBe(frames[1]!.buffer);
      await w.stop();
      native.close(fd);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an fd the event loop cannot poll, naming the call, and fds added after start', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-fdwatch-'));
    try {
      const file = path.join(dir, 'plain');
      writeFileSync(file, 'x');
      const native = addon();
      const fd = native.open(file);
      const w = new FdWatcher();
      w.watchCounter(fd, () => {});
      let error: unknown;
      try {
        w.start(() => {});
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(KvmError);
      expect(error).toMatchObject({ syscall: 'uv_poll_init', code: 'EPERM' });
      await w.stop();
      native.close(fd);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const w = new FdWatcher();
    const native = addon();
    const e = native.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w.watchCounter(e, () => {});
    w.start(() => {});
    expect(() => w.watchCounter(e, () => {})).toThrow(/before start/);
    await w.stop();
    native.close(e);
  });
});
