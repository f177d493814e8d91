import { describe, expect, it } from 'vitest';
import { addon } from '../../../../src/kvm/addon.js';
import { EFD_CLOEXEC, EFD_NONBLOCK } from '../../../../src/kvm/constants.js';
import { FdWatcher, signalEventfd } from '../../../../src/devices/virtio/fd-watcher.js';
import { until } from './test-driver.js';

// The watcher thread over real eventfds (no KVM: KVM's ioeventfd signals the same kind of fd).
describe('FdWatcher', () => {
  it('calls each eventfd\'s handler on the main thread after it is signalled, and stops', async () => {
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
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual(['b', 'a']);
    await w.stop();
    signalEventfd(a);
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual(['b', 'a']);
    native.close(a);
    native.close(b);
  });

  it('refuses fds added after start', () => {
    const w = new FdWatcher();
    w.watchCounter(0, () => {});
    (w as unknown as { worker: object }).worker = {};
    expect(() => w.watchCounter(1, () => {})).toThrow(/before start/);
  });
});
