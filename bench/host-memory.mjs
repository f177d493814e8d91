// Host memory in the same state for every run of a benchmark that writes fresh memory.
//
// On a host that is itself a VM (this one: virtio-balloon free page reporting, about 2 s after memory
// is freed) memory free for longer has been handed back to the hypervisor, and the first write to
// each page of it costs a hypervisor fault: writing 1 GiB took 2.3-2.4 s in fresh memory here, 0.12 s
// in memory just freed; on a host that is not a VM the second is the only kind. A benchmark whose
// subject writes fresh memory (a migration destination receiving guest RAM) measures that state more
// than itself unless every run starts from the same one: in one bench/migrate run, QEMU's full 1 GiB
// migration took 0.7 s right after tsvmm's processes had exited and 2.9 s before them. This narrows
// that spread without removing it: the host keeps handing free memory back while a run goes on, so a
// run that writes for more than a second or two meets fresh memory again, and levelled full 1 GiB
// migrations still ranged from 0.54 to 2.9 s (QEMU) and 0.56 to 0.97 s (tsvmm) over a few runs.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MiB = 2 ** 20;

/**
 * A child process writes `bytes` of guest memory (mapped as tsvmm maps guest RAM, with transparent
 * huge pages, so what it frees is what the next one takes) and holds it until release(): call that
 * just before the measured run, which then writes into memory just freed.
 */
export async function holdHostMemory(bytes) {
  const script = `const { GuestMemory } = await import(${JSON.stringify(path.join(root, 'dist', 'memory', 'guest-memory.js'))});
    const m = GuestMemory.create(${Math.ceil(bytes / (2 * MiB)) * 2 * MiB});
    for (const r of m.regions) r.bytes.fill(1);
    process.stdout.write('held\\n'); setInterval(() => {}, 1 << 30);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await new Promise((resolve, reject) => {
    child.stdout.once('data', resolve);
    child.once('exit', (code) => reject(new Error(`holding ${(bytes / MiB).toFixed(0)} MiB of host memory failed (exit ${code})`)));
  });
  let released = false;
  return {
    /** Frees the memory (the process exits) and resolves once it has. */
    async release() {
      if (!released) child.kill('SIGKILL');
      released = true;
      await exited;
    },
  };
}
