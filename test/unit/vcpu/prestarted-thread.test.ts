import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PrestartedThread } from '../../../src/vcpu/prestarted-thread.js';

function script(body: string): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'tsvmm-prestart-')), 'thread.mjs');
  writeFileSync(file, body);
  return file;
}

/** Waits until `cond` holds, polling the event loop (worker events arrive asynchronously). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
}

describe('PrestartedThread', () => {
  it('hands over a live thread once, posting the data as its first message', async () => {
    const echo = script(`import { parentPort, workerData } from 'node:worker_threads';
      parentPort.once('message', (m) => parentPort.postMessage({ got: m, prestarted: workerData.prestarted }));`);
    const t = PrestartedThread.start(echo);
    expect(t.available).toBe(true);
    const w = t.take({ vcpu: 7 });
    expect(w).toBeDefined();
    expect(t.take({ vcpu: 8 })).toBeUndefined();
    const reply = await new Promise((resolve) => w!.once('message', resolve));
    expect(reply).toEqual({ got: { vcpu: 7 }, prestarted: true });
    await w!.terminate();
  });

  it('gives nothing (so the VM starts a fresh thread) once its thread failed, and never throws the failure', async () => {
    const t = PrestartedThread.start(script(`throw new Error('module failed to load');`));
    // The failure is kept, not thrown: no unhandled 'error' reaches this test.
    await until(() => !t.available);
    expect(t.available).toBe(false);
    expect(t.take({})).toBeUndefined();
  });
});
