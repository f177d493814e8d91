#!/usr/bin/env node
// bench/migrate: live migration over loopback TCP, tsvmm against QEMU (Debian's qemu-system-x86_64,
// -M microvm -enable-kvm) migrating the same guests, in one run: 1 GiB and 4 GiB of RAM, an idle
// guest (it halts between timer ticks, as an OS with nothing to run does) and the dirtier (and, with
// --cases full, RAM full of data that no longer changes: the one case whose wire rate measures the
// stream; with --cases spinning, a guest spinning in ring 0, which holds a host CPU throughout), each VMM driven the same way over QMP (max-bandwidth 0 = unlimited, the same
// downtime-limit, auto-converge on). For each it prints total time, downtime, bytes sent and pages/s,
// the tsvmm/QEMU ratios, and the loopback TCP limit measured in the same run (the better of a C pair,
// bench/loopback-tcp.c, and a Node sender pushing bytes into a Node receiver in another process, the
// shape of a migration, before and after the migrations: the highest of the four). A full-case
// migration's wire rate is also put against the C pair measured right before it, with both VMMs up,
// and the summary gives the median of those shares beside the share of the run's limit: this host's
// loopback swings by up to 2x within one run.
//
// Every figure comes from the source's own query-migrate answer after completion, the same fields for
// both VMMs: total-time and downtime (ms), ram.transferred (bytes on the wire), and pages/s computed as
// (ram.normal + ram.duplicate) / total-time, because tsvmm does not fill ram.pages-per-second.
// Downtime is not measured the same way inside the two: QEMU's ends when its source has sent
// everything, tsvmm's when the destination has acknowledged loading it (so tsvmm's includes the load).
// So it also prints "guest stopped", measured alike for both from outside: the source's STOP event
// (the switch-over stops the guest) to the destination's RESUME (the guest runs again), by the
// events' timestamps; that one includes each destination's load and start.
// Each destination receives into memory freed just as its migration starts, by a child process
// that held as much as the guest's RAM until then (holdHostMemory: on a host that is a VM, memory
// freed a while ago costs a hypervisor fault per page to write, memory freed just now does not).
// Each round also gives the CPU time each VMM process used from the migrate command to completion
// (user + system, exited threads included, in /proc's 10 ms ticks), source and destination apart:
// what each side's work cost, which the host's noise moves less than the wall clock (on this host a
// 1 GiB full-RAM round took 320-520 ms of wall time, as the destination's memory came fast or slow).
//
// Reproduce: npm install && node bench/migrate.mjs [--sizes 1,4] [--cases idle,dirtying[,full][,spinning]]
//   [--dirty-bytes 64M] [--downtime-limit 300] [--timeout 600] [--loopback-seconds 3] [--rounds N]
//   [--phases]   (each tsvmm switch-over's phases from its trace lines: where the downtime goes)
//   [--destination-prealloc]   (both destinations take all guest RAM at start: the host's fresh
//                               memory out of the measured time; for --cases full, as QEMU's
//                               destination reads each zero page it is sent, which in preallocated
//                               RAM is real memory)
//   [--verify]   (tsvmm's migrations with x-verify: both sides hash guest RAM in the pause, which
//                 QEMU has no check for; the ratios then say what verify costs beside QEMU without)
// Without /dev/kvm: scripts/nested-kvm/run.sh --mem 10G -- env TMPDIR=/dev/shm node bench/migrate.mjs
// (10G: a 4 GiB source and destination, QEMU's or ours, may each end up with all guest RAM resident.)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kvmAvailable, kvmIsPvm } from './kvm-available.mjs';
import { holdHostMemory } from './host-memory.mjs';
import { cLoopback } from './loopback-tcp.mjs';
import { formatPhases, medianPhases, switchOverPhases } from './switchover-phases.mjs';
import { benchArgs } from './bench-args.mjs';

const values = benchArgs(import.meta.url, {
  sizes: { type: 'string', default: '1,4' },
  cases: { type: 'string', default: 'idle,dirtying' },
  'dirty-bytes': { type: 'string', default: '64M' },
  'downtime-limit': { type: 'string', default: '300' },
  timeout: { type: 'string', default: '600' },
  'loopback-seconds': { type: 'string', default: '3' },
  multifd: { type: 'string', default: '0' },
  rounds: { type: 'string', default: '1' },
  phases: { type: 'boolean', default: false },
  'destination-prealloc': { type: 'boolean', default: false },
  verify: { type: 'boolean', default: false },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { QmpClient } = await import(path.join(root, 'dist', 'control', 'qmp-client.js'));

// --phases: every tsvmm traces its switch-over (TSVMM_TRACE_PHASES=2, inherited by the VMM processes),
// and each tsvmm migration's row is followed by its phases (bench/switchover-phases.mjs).
if (values.phases) process.env.TSVMM_TRACE_PHASES = '2';
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const sizesGiB = values.sizes.split(',').map(Number);
const cases = values.cases.split(',');
const dirtyBytes = parseSize(values['dirty-bytes']);
const downtimeLimitMs = Number(values['downtime-limit']);
const timeoutMs = Number(values.timeout) * 1000;
const loopbackSeconds = Number(values['loopback-seconds']);
/**
 * Both destinations allocate all guest RAM before the migration (tsvmm --mem-prealloc, QEMU
 * -mem-prealloc), so that the host's speed at handing out fresh memory, which on a host that is a VM
 * swings several-fold from one round to the next (host-memory.mjs), is out of the measured time and
 * what is left is the VMMs' own work and the link.
 */
const destinationPrealloc = values['destination-prealloc'];
/** Extra RAM channels (QMP capability multifd, parameter multifd-channels) for both VMMs; 0 = one connection. */
const multifdChannels = Number(values.multifd);
/**
 * Migrations per VMM and case, tsvmm and QEMU alternately; the summary takes each figure's median.
 * One migration of a dirtying guest says little: where the guest's sweep is when a sync lands decides
 * how much is left for the pause (on kvm_pvm one run gave QEMU 5 ms of downtime, the next 55 ms).
 */
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) usage(`--rounds: '${values.rounds}' is not a number of migrations (1 or more)`);
if (!Number.isInteger(multifdChannels) || multifdChannels < 0 || multifdChannels > 255) usage(`--multifd: '${values.multifd}' is not a channel count (0 to 255)`);
for (const c of cases) {
  if (!['idle', 'dirtying', 'full', 'spinning'].includes(c)) usage(`--cases: unknown case '${c}' (idle, dirtying, full, spinning)`);
}
if (sizesGiB.some((s) => !(s > 0))) usage(`--sizes: '${values.sizes}' is not a list of GiB sizes such as 1,4`);
if (!(downtimeLimitMs > 0) || !(timeoutMs > 0) || !(loopbackSeconds > 0)) usage('--downtime-limit, --timeout and --loopback-seconds take positive numbers');

if (!kvmAvailable()) {
  console.error('bench/migrate: cannot run: /dev/kvm is missing or not read-writable on this host (try scripts/nested-kvm/run.sh --mem 10G -- env TMPDIR=/dev/shm node bench/migrate.mjs)');
  process.exit(4);
}
const haveQemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;
const qemuVersion = haveQemu ? spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] : '';

/** Where the dirtier starts stamping: its default, 16 MiB, clear of the image and boot structures. */
const DIRTY_START = 16 * MiB;
const DIRTIER = path.join(root, 'guests', 'build', 'dirtier.elf');
/** The idle guest: halts, waking 100 times a second for its LAPIC timer; 't' on COM1 prints its ticks. */
const IDLE = path.join(root, 'guests', 'build', 'idle.elf');
/** The spinning guest: ring-0 loop bumping one counter; it dirties one page and never exits to the VMM. */
const SPIN = path.join(root, 'guests', 'build', 'spin.elf');
const POLL_MS = 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const benchStart = Date.now();
/** Where the bench is, on stderr (stdout carries the results): a stage that hangs shows which one. */
const progress = (what) => process.stderr.write(`bench/migrate +${((Date.now() - benchStart) / 1000).toFixed(1)}s: ${what}\n`);
const workDir = mkdtempSync(path.join(os.tmpdir(), 'bench-migrate-'));
/** Every process this bench started, killed on the way out whatever happens. */
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(workDir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

function usage(message) {
  console.error(`bench/migrate: ${message}`);
  process.exit(2);
}

function parseSize(text) {
  const m = /^(\d+)([KMG]?)$/i.exec(text);
  if (m === null) usage(`--dirty-bytes: '${text}' is not a size such as 64M`);
  return Number(m[1]) * { '': 1, k: 1024, m: MiB, g: GiB }[m[2].toLowerCase()];
}

/** Clock ticks per second, the unit of /proc/PID/stat's CPU times. */
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** A VMM process: serial console on stdio (typed into, read back), QMP on a unix socket. */
class VmmProcess {
  constructor(label, command, args, qmpPath) {
    this.label = label;
    this.qmpPath = qmpPath;
    this.stdout = '';
    this.stderr = '';
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(this.child);
    this.child.stdout.on('data', (d) => { this.stdout += d.toString('latin1'); });
    this.child.stderr.on('data', (d) => { this.stderr += d.toString(); });
    this.child.stdin.on('error', () => {}); // typing into a VMM that already exited is not an error here
    this.exited = new Promise((resolve) => this.child.on('close', (status, signal) => {
      children.delete(this.child);
      resolve(status ?? signal);
    }));
    this.exitStatus = undefined;
    this.exited.then((s) => { this.exitStatus = s; });
  }

  /** CPU time (user + system, ms) the process has used so far, its exited threads included; undefined once it is gone. */
  cpuMs() {
    try {
      const fields = readFileSync(`/proc/${this.child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS; // utime, stime (proc(5) fields 14, 15)
    } catch {
      return undefined;
    }
  }

  async waitFor(what, label, ms = 120_000) {
    const t0 = Date.now();
    if (!what()) progress(`${this.label}: waiting for ${label}`);
    while (!what()) {
      if (this.exitStatus !== undefined) throw new Error(`${this.label} exited (${this.exitStatus}) while waiting for ${label}; stderr: ${this.stderr.trim().slice(-400)}; console: ${this.stdout.slice(-300)}`);
      if (Date.now() - t0 > ms) throw new Error(`${this.label}: timed out waiting for ${label}; stderr: ${this.stderr.trim().slice(-400)}; console: ${this.stdout.slice(-300)}`);
      await sleep(20);
    }
  }

  type(text) {
    this.child.stdin.write(text);
  }

  async qmp() {
    await this.waitFor(() => existsSync(this.qmpPath), 'its QMP socket');
    // A unix socket's file exists from bind(), before listen(): a connect in between is refused (one
    // QEMU destination's was, failing a whole 4 GiB round). Refused while the VMM lives: try again.
    for (let attempt = 1; ; attempt++) {
      try {
        return await QmpClient.connect(`unix:${this.qmpPath}`, { timeoutMs: 30_000 });
      } catch (e) {
        if (!/ECONNREFUSED/.test(e.message) || this.exitStatus !== undefined || attempt >= 100) throw e;
        await sleep(20);
      }
    }
  }

  kill() {
    if (this.exitStatus === undefined) this.child.kill('SIGKILL');
  }
}

/** A free loopback port: the kernel picks it; the race until the destination binds it is harmless here. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let serial = 0;
const socketPath = (name) => path.join(workDir, `${name}-${++serial}.qmp`);

function guestFor(kind) {
  if (kind === 'idle') return { kernel: IDLE, cmdline: '', ready: /idle: halting\n/ };
  if (kind === 'spinning') return { kernel: SPIN, cmdline: '', ready: /spinning\n/ };
  // full: every page of RAM from 16 MiB up stamped once (span=1: above 4 GiB too), then left alone.
  if (kind === 'full') return { kernel: DIRTIER, cmdline: `start=0x${DIRTY_START.toString(16)} span=1 hold=1`, ready: /dirtier: holding/ };
  return { kernel: DIRTIER, cmdline: `start=0x${DIRTY_START.toString(16)} size=0x${dirtyBytes.toString(16)}`, ready: /dirtier: dirtying/ };
}

/** The two VMMs, started the same way: same guest, RAM, command line; the destination waits for a stream. */
const vmms = {
  tsvmm: {
    source(g, memGiB) {
      const qmp = socketPath('tsvmm-src');
      const args = [path.join(root, 'bin', 'tsvmm.cjs'), 'run', g.kernel, '--mem', `${memGiB}G`, '--qmp', `unix:${qmp}`];
      if (g.cmdline) args.push('--cmdline', g.cmdline);
      return new VmmProcess('tsvmm source', process.execPath, args, qmp);
    },
    async destination(g, memGiB, port) {
      const qmp = socketPath('tsvmm-dst');
      const p = new VmmProcess('tsvmm destination', process.execPath, [
        path.join(root, 'bin', 'tsvmm.cjs'), 'run', g.kernel, '--mem', `${memGiB}G`,
        '--incoming', `tcp:127.0.0.1:${port}`, '--qmp', `unix:${qmp}`, ...(destinationPrealloc ? ['--mem-prealloc'] : []),
      ], qmp);
      try {
        await p.waitFor(() => p.stderr.includes('waiting for an incoming migration'), 'it to listen');
      } catch (e) {
        p.kill();
        throw e;
      }
      return p;
    },
  },
  qemu: {
    args(g, memGiB, qmp) {
      const args = [
        '-enable-kvm', '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-nodefaults', '-no-user-config',
        '-display', 'none', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
        '-m', `${memGiB}G`, '-kernel', g.kernel, '-qmp', `unix:${qmp},server=on,wait=off`,
      ];
      if (g.cmdline) args.push('-append', g.cmdline);
      // Both ends of a QEMU multifd migration need the capability; -global sets it before -incoming.
      if (multifdChannels > 0) args.push('-global', 'migration.x-multifd=on', '-global', `migration.multifd-channels=${multifdChannels}`);
      return args;
    },
    source(g, memGiB) {
      const qmp = socketPath('qemu-src');
      return new VmmProcess('QEMU source', 'qemu-system-x86_64', this.args(g, memGiB, qmp), qmp);
    },
    async destination(g, memGiB, port) {
      const qmp = socketPath('qemu-dst');
      const p = new VmmProcess('QEMU destination', 'qemu-system-x86_64', [...this.args(g, memGiB, qmp), '-incoming', `tcp:127.0.0.1:${port}`, ...(destinationPrealloc ? ['-mem-prealloc'] : [])], qmp);
      // QEMU binds the -incoming port during start-up, before its main loop serves QMP: a QMP answer means it listens.
      try {
        (await p.qmp()).close();
      } catch (e) {
        p.kill(); // not yet the caller's to stop: one such QEMU outlived its bench run
        throw e;
      }
      return p;
    },
  },
};

/**
 * Polls query-migrate until the migration ends, asking once more the moment the MIGRATION event says
 * it completed: a tsvmm source exits soon after (QMP stays up for 2 s), a QEMU source stays.
 */
async function migrationEnd(client, label) {
  let completed = false;
  let wake;
  client.on('event', (e) => {
    if (e.event === 'MIGRATION' && e.data?.status === 'completed') { completed = true; wake?.(); }
  });
  const t0 = Date.now();
  let lastPass;
  for (;;) {
    let info = await client.execute('query-migrate');
    // QEMU 7.2 sets 'completed' a moment before it fills in the figures (migration_completion,
    // then migration_calculate_complete): asked in between, it answers total-time 0.
    for (let i = 0; i < 50 && info.status === 'completed' && !(info['total-time'] > 0); i++) {
      await sleep(10);
      info = await client.execute('query-migrate');
    }
    if (['completed', 'failed', 'cancelled'].includes(info.status)) return info;
    if (info.ram && info.ram['dirty-sync-count'] !== lastPass) {
      lastPass = info.ram['dirty-sync-count'];
      progress(`${label}: ${info.status}, pass ${lastPass}, sent ${(info.ram.transferred / MiB).toFixed(1)} MiB, remaining ${(info.ram.remaining / MiB).toFixed(1)} MiB, throttle ${info['cpu-throttle-percentage'] ?? 0}%`);
    }
    if (Date.now() - t0 > timeoutMs) {
      await client.execute('migrate_cancel').catch(() => {});
      return { ...info, status: 'timeout', 'error-desc': `${label}: not completed after ${timeoutMs / 1000} s (passes: ${info.ram?.['dirty-sync-count']})` };
    }
    if (!completed) await new Promise((resolve) => { wake = resolve; setTimeout(resolve, POLL_MS); });
  }
}

/** One migration of one VMM; returns the source's final query-migrate figures and what the destination said. */
async function migrateOnce(vmm, kind, memGiB) {
  const g = guestFor(kind);
  // Memory for the destination to receive into, the same for both VMMs (host-memory.mjs), unless
  // each destination took all of its RAM at start.
  const warm = destinationPrealloc ? { release: async () => {} } : await holdHostMemory(Math.ceil(1.1 * memGiB * GiB));
  const port = await freePort();
  const dst = await vmm.destination(g, memGiB, port);
  const src = vmm.source(g, memGiB);
  let srcQmp;
  let dstQmp;
  /** Filled in once both VMMs have exited (their trace lines are written at exit): see --phases. */
  const phases = {};
  try {
    // A full guest's one pass writes all its RAM first: on kvm_pvm a write-protect fault per page.
    await src.waitFor(() => g.ready.test(src.stdout), `the guest (${g.ready})`, kind === 'full' ? 600_000 : undefined);
    let dirtyRate;
    if (kind === 'dirtying') {
      // Migrate only once the whole range holds stamps ('p' is answered after a complete pass), and
      // measure how fast this guest dirties under this VMM: the two need not run it at the same speed.
      const pass = async (n) => {
        src.type('p');
        await src.waitFor(() => [...src.stdout.matchAll(/dirtier: pass (\d+)\n/g)].length >= n, 'a full dirtier pass', 300_000);
        return { pass: Number([...src.stdout.matchAll(/dirtier: pass (\d+)\n/g)][n - 1][1]), at: performance.now() };
      };
      const first = await pass(1);
      await sleep(2_000);
      const second = await pass(2);
      dirtyRate = ((second.pass - first.pass) * (dirtyBytes / 4096)) / ((second.at - first.at) / 1000);
    } else {
      await sleep(500);
    }
    srcQmp = await src.qmp();
    await srcQmp.execute('migrate-set-capabilities', { capabilities: [
      { capability: 'auto-converge', state: true },
      ...(multifdChannels > 0 ? [{ capability: 'multifd', state: true }] : []),
    ] });
    if (multifdChannels > 0) await srcQmp.execute('migrate-set-parameters', { 'multifd-channels': multifdChannels });
    // max-bandwidth 0: no limit in both (QEMU 7.2 migration/qemu-file.c: rate_limit_max > 0 is checked).
    await srcQmp.execute('migrate-set-parameters', { 'downtime-limit': downtimeLimitMs, 'max-bandwidth': 0 });
    if (values.verify && vmm === vmms.tsvmm) await srcQmp.execute('migrate-set-parameters', { 'x-verify': true });
    // The guest's own stop, the same for both VMMs: from the source's STOP event (it stops the guest
    // for the switch-over) to the destination's RESUME (it runs the guest again), by the events'
    // wall-clock timestamps, both processes on this host's clock.
    const eventMs = (e) => e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
    let stopAt;
    let resumeAt;
    srcQmp.on('event', (e) => { if (e.event === 'STOP' && stopAt === undefined) stopAt = eventMs(e); });
    dstQmp = await dst.qmp();
    dstQmp.on('event', (e) => { if (e.event === 'RESUME' && resumeAt === undefined) resumeAt = eventMs(e); });
    // The full case's wire rate measures the stream: beside the run's limit, it is also put against
    // the C pair measured right before it, both VMMs up, as this host's loopback swings by up to 2x
    // within a run (bench/ram-transfer takes each round's ratio to its own round's pair likewise).
    const loopbackNow = kind === 'full' ? cLoopback(workDir, loopbackSeconds) : undefined;
    progress(`${vmm === vmms.tsvmm ? 'tsvmm' : 'QEMU'} ${memGiB} GiB ${kind}: migrating`);
    await warm.release();
    const cpuBefore = [src.cpuMs(), dst.cpuMs()];
    await srcQmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const info = await migrationEnd(srcQmp, `${vmm === vmms.tsvmm ? 'tsvmm' : 'QEMU'} ${memGiB} GiB ${kind}`);
    const used = (before, now) => (before === undefined || now === undefined ? undefined : now - before);
    info['x-cpu-source'] = used(cpuBefore[0], src.cpuMs());
    info['x-cpu-destination'] = used(cpuBefore[1], dst.cpuMs());
    if (loopbackNow !== undefined && info.status === 'completed') {
      info['x-loopback-now'] = loopbackNow;
      info['x-wire-share-now'] = wireRate(info) / loopbackNow;
    }
    let check = '';
    if (info.status === 'completed') {
      await dstQmp.execute('query-status'); // any RESUME sent before this answer has arrived
      if (stopAt !== undefined && resumeAt !== undefined) info['x-guest-stopped'] = resumeAt - stopAt;
      const st = await dstQmp.execute('query-status');
      check = `destination ${st.status}`;
      if (kind === 'idle') {
        // Its timer came along: two answers, 100 ms apart, show the ticks going on on the destination.
        const ticks = async (n) => {
          dst.type('t');
          await dst.waitFor(() => [...dst.stdout.matchAll(/idle: ticks (\d+)\n/g)].length >= n, 'the idle guest to count its ticks', 10_000);
          return Number([...dst.stdout.matchAll(/idle: ticks (\d+)\n/g)][n - 1][1]);
        };
        const first = await ticks(1);
        await sleep(100);
        const second = await ticks(2);
        check = second > first ? `destination ticking (${first} -> ${second})` : `destination NOT ticking (${first} -> ${second})`;
      } else if (kind !== 'spinning') {
        // The guest, now on the destination, checks every stamp it wrote on the source.
        dst.type('v');
        await dst.waitFor(() => /dirtier: verify (ok|FAILED)[^\n]*\n/.test(dst.stdout), 'the guest to verify itself', 300_000);
        check = /dirtier: verify (ok|FAILED)[^\n]*/.exec(dst.stdout)[0];
      }
    }
    return { info, check, dirtyRate, phases: vmm === vmms.tsvmm && values.phases ? phases : undefined };
  } catch (e) {
    // What the VMMs said on the way down is the reason more often than the symptom we saw.
    await Promise.race([Promise.all([src.exited, dst.exited]), sleep(2_000)]);
    const said = (p) => `${p.label} ${p.exitStatus === undefined ? 'still running' : `exited (${p.exitStatus})`}: ${p.stderr.trim().slice(-600) || 'nothing on stderr'}`;
    throw new Error(`${e.message}; ${said(src)}; ${said(dst)}`, { cause: e });
  } finally {
    await warm.release();
    for (const c of [srcQmp, dstQmp]) {
      if (c && !c.closed) {
        await c.execute('quit').catch(() => {});
        c.close();
      }
    }
    await Promise.race([Promise.all([src.exited, dst.exited]), sleep(5_000)]);
    src.kill();
    dst.kill();
    if (values.phases) Object.assign(phases, switchOverPhases(src.stderr, dst.stderr));
  }
}

/** Bytes/s a Node sender pushes through a loopback TCP socket into a Node receiver in another process. */
async function nodeLoopback(seconds) {
  const port = await freePort();
  const receiver = spawn(process.execPath, ['-e', `
    const net = require('node:net');
    let n = 0;
    net.createServer((s) => { s.on('data', (d) => { n += d.length; }); s.on('end', () => { process.stdout.write(String(n)); process.exit(0); }); })
      .listen(${port}, '127.0.0.1', () => process.stdout.write('listening\\n'));
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(receiver);
  let out = '';
  receiver.stdout.on('data', (d) => { out += d; });
  while (!out.includes('listening')) await sleep(10);
  const done = new Promise((resolve) => receiver.on('close', () => { children.delete(receiver); resolve(); }));
  const chunk = Buffer.alloc(MiB, 0xa5);
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  socket.end();
  await done;
  const ms = performance.now() - t0;
  return Number(out.slice(out.indexOf('\n') + 1)) / (ms / 1000);
}

/** The loopback TCP limit now: the better of a C pair and a Node pair, both printed. */
async function loopbackLimit(when) {
  const c = cLoopback(workDir, loopbackSeconds);
  const node = await nodeLoopback(loopbackSeconds);
  console.log(`  loopback TCP ${when} (${loopbackSeconds} s each, sender and receiver in two processes): `
    + `C ${c === undefined ? 'not measured (no gcc)' : fmtRate(c)}, Node ${fmtRate(node)}`);
  return Math.max(c ?? 0, node);
}

const fmtMs = (ms) => (ms === undefined ? '-' : `${Math.round(ms)} ms`);
/** Event timestamps give microseconds: a short stop to 0.01 ms. */
const fmtStopMs = (ms) => (ms === undefined ? '-' : `${ms < 10 ? ms.toFixed(2) : Math.round(ms)} ms`);
const fmtBytes = (b) => (b === undefined ? '-' : `${(b / MiB).toFixed(1)} MiB`);
const fmtRate = (r) => `${(r / MiB).toFixed(0)} MiB/s`;
const pagesPerSecond = (info) => (info.ram.normal + info.ram.duplicate) / (info['total-time'] / 1000);
const wireRate = (info) => info.ram.transferred / (info['total-time'] / 1000);
const ratio = (a, b) => (a === undefined || b === undefined || b === 0 ? '-' : (a / b).toFixed(2));

/**
 * One result standing for several rounds: each figure the summary uses is the median of the completed
 * rounds' (so a figure and its neighbour may come from different rounds); any failed round fails it.
 */
function medianOf(results) {
  const median = (xs) => (xs.length === 0 ? undefined : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
  if (results.length === 1) return results[0];
  const failed = results.find((r) => r.info.status !== 'completed');
  if (failed !== undefined) return failed;
  const med = (get) => median(results.map((r) => get(r.info)).filter((x) => x !== undefined));
  return {
    check: `median of ${results.length}`,
    info: {
      status: 'completed', 'total-time': med((i) => i['total-time']), downtime: med((i) => i.downtime),
      'x-guest-stopped': med((i) => i['x-guest-stopped']),
      'x-cpu-source': med((i) => i['x-cpu-source']), 'x-cpu-destination': med((i) => i['x-cpu-destination']),
      'x-wire-share-now': med((i) => i['x-wire-share-now']),
      ram: { transferred: med((i) => i.ram.transferred), normal: med((i) => i.ram.normal), duplicate: med((i) => i.ram.duplicate) },
    },
  };
}

function row(label, r, limit) {
  if (r.info.status !== 'completed') return `  ${label}: ${r.info.status}: ${r.info['error-desc'] ?? 'no reason given'}`;
  const i = r.info;
  return `  ${label}: total ${fmtMs(i['total-time'])}, downtime ${fmtMs(i.downtime)}, guest stopped ${fmtStopMs(i['x-guest-stopped'])}, sent ${fmtBytes(i.ram.transferred)}, `
    + `${Math.round(pagesPerSecond(i))} pages/s, wire ${fmtRate(wireRate(i))} = ${((100 * wireRate(i)) / limit).toFixed(0)}% of loopback`
    + `${i['x-loopback-now'] === undefined ? '' : ` (${(100 * i['x-wire-share-now']).toFixed(0)}% of ${fmtRate(i['x-loopback-now'])} just before)`}, `
    + `cpu source ${fmtMs(i['x-cpu-source'])}, destination ${fmtMs(i['x-cpu-destination'])}, passes ${i.ram['dirty-sync-count']}${r.dirtyRate === undefined ? '' : `, guest dirtied ${Math.round(r.dirtyRate)} pages/s before`}; ${r.check}`;
}

/** kvm_pvm (a KVM for hosts that are VMs themselves) is this host's own KVM, not nested KVM on TCG. */
const kvmPvm = kvmIsPvm();
const inNested = !kvmPvm && existsSync('/proc/cpuinfo') && /hypervisor/.test(readFileSync('/proc/cpuinfo', 'utf8'));
console.log('migrate: live migration over loopback TCP, tsvmm vs QEMU microvm with KVM, the same guests, in one run');
if (inNested) console.log('  NOTE: this host is itself a VM (cpuinfo: hypervisor); under nested KVM on TCG all figures are distorted');
if (kvmPvm) console.log('  NOTE: /dev/kvm is kvm_pvm: guest CPL0 code is emulated (the spinning guest\'s loop), CPL3 runs natively (the dirtier\'s)');
console.log(`  both: max-bandwidth 0 (unlimited), downtime-limit ${downtimeLimitMs} ms, auto-converge on, ${multifdChannels > 0 ? `multifd with ${multifdChannels} channels` : 'one TCP channel'}`);
console.log(`  idle = guests/build/idle.elf (halts; a 100 Hz LAPIC timer wakes it; checked ticking on the destination); dirtying = guests/build/dirtier.elf `
  + `rewriting ${fmtBytes(dirtyBytes)} from 16 MiB, pass after pass, migrated after a full pass, verified on the destination`);
if (cases.includes('full')) console.log('  full = guests/build/dirtier.elf hold=1: every page from 16 MiB up stamped once, then unchanged (it halts between ticks); verified on the destination');
if (cases.includes('spinning')) console.log('  spinning = guests/build/spin.elf (ring-0 counter loop, one page dirty: it holds a host CPU throughout)');
console.log(`  QEMU: ${haveQemu ? qemuVersion : 'not installed: its half is skipped (apt install qemu-system-x86)'}`);
if (destinationPrealloc) console.log('  destinations: all guest RAM allocated at start (tsvmm --mem-prealloc, QEMU -mem-prealloc)');
if (values.verify) console.log('  tsvmm: verify on (x-verify: both sides hash guest RAM in the pause); QEMU has no such check, and runs without');
const limitBefore = await loopbackLimit('before the migrations');

const results = [];
for (const memGiB of sizesGiB) {
  for (const kind of cases) {
    const label = `${memGiB} GiB ${kind}`;
    const ours = [];
    const theirs = [];
    for (let round = 1; round <= rounds; round++) {
      const tag = rounds > 1 ? ` #${round}` : '';
      const tsvmm = await migrateOnce(vmms.tsvmm, kind, memGiB).catch((e) => ({ info: { status: 'error', 'error-desc': e.message }, check: '' }));
      console.log(row(`${label.padEnd(14)} tsvmm${tag}`, tsvmm, limitBefore));
      if (tsvmm.phases !== undefined) console.log(`    switch-over (ms): ${formatPhases(tsvmm.phases)}`);
      ours.push(tsvmm);
      if (haveQemu) {
        const qemu = await migrateOnce(vmms.qemu, kind, memGiB).catch((e) => ({ info: { status: 'error', 'error-desc': e.message }, check: '' }));
        console.log(row(`${label.padEnd(14)} QEMU ${tag}`, qemu, limitBefore));
        theirs.push(qemu);
      }
    }
    results.push({ label, tsvmm: medianOf(ours), qemu: haveQemu ? medianOf(theirs) : undefined, ours, theirs,
      phases: values.phases ? medianPhases(ours.map((r) => r.phases ?? {})) : undefined });
  }
}
const limit = Math.max(limitBefore, await loopbackLimit('after the migrations'));
console.log(`  loopback limit used below: ${fmtRate(limit)}, the highest of the four`);

if (rounds > 1) console.log(`\n  below: the median of ${rounds} rounds of each figure; each target's verdict is the medians', and [held in k of n rounds] counts\n  the rounds where it held, tsvmm's round i against QEMU's round i, run right after it`);
console.log('\n  case             total tsvmm/QEMU   downtime tsvmm/QEMU   guest stopped tsvmm/QEMU   bytes tsvmm/QEMU   pages/s tsvmm/QEMU   tsvmm wire % of loopback   CPU source, destination tsvmm/QEMU');
/**
 * With several rounds, in how many a target held: tsvmm's round i against QEMU's round i, run right
 * after it (`theirs` undefined: tsvmm's alone), both completed. The medians decide the verdict; this
 * says how steady it is, as single rounds here spread more than the targets' margins.
 */
function inRounds(ours, theirs, get, holds) {
  if (ours.length < 2) return '';
  const done = (r) => r?.info.status === 'completed' && get(r.info) !== undefined;
  const pairs = ours.map((o, i) => [o, theirs?.[i]]).filter(([o, t]) => done(o) && (theirs === undefined || done(t)));
  const held = pairs.filter(([o, t]) => holds(get(o.info), t === undefined ? undefined : get(t.info))).length;
  return ` [held in ${held} of ${pairs.length} rounds]`;
}

const verdicts = [];
for (const { label, tsvmm, qemu, ours, theirs } of results) {
  const t = tsvmm.info.status === 'completed' ? tsvmm.info : undefined;
  const q = qemu?.info.status === 'completed' ? qemu.info : undefined;
  const pct = t ? (100 * wireRate(t)) / limit : undefined;
  console.log(`  ${label.padEnd(15)}  ${ratio(t?.['total-time'], q?.['total-time']).padStart(16)}   ${ratio(t?.downtime, q?.downtime).padStart(19)}   `
    + `${ratio(t?.['x-guest-stopped'], q?.['x-guest-stopped']).padStart(24)}   `
    + `${ratio(t?.ram.transferred, q?.ram.transferred).padStart(16)}   ${ratio(t && pagesPerSecond(t), q && pagesPerSecond(q)).padStart(18)}   `
    + `${pct === undefined ? '-' : `${pct.toFixed(0)}%`.padStart(24)}   `
    + `${`${ratio(t?.['x-cpu-source'], q?.['x-cpu-source'])}, ${ratio(t?.['x-cpu-destination'], q?.['x-cpu-destination'])}`.padStart(34)}`);
  const met = (ok) => (ok === undefined ? 'not measured' : ok ? 'met' : 'NOT met');
  const atMost = (factor) => (a, b) => a <= factor * b;
  /** A target against QEMU: the medians' verdict, then in how many rounds it held. One test for both. */
  const vsQemu = (get, holds) => {
    const a = t === undefined ? undefined : get(t);
    const b = q === undefined ? undefined : get(q);
    return `${met(a === undefined || b === undefined ? undefined : holds(a, b))}${q ? inRounds(ours, theirs, get, holds) : ''}`;
  };
  verdicts.push(`  ${label.padEnd(15)}  total <= 0.8x QEMU: ${vsQemu((i) => i['total-time'], atMost(0.8))}; `
    + `downtime <= QEMU's: ${vsQemu((i) => i.downtime, atMost(1))} (each one's own field), `
    + `${vsQemu((i) => i['x-guest-stopped'], atMost(1))} (guest stopped); `
    + `throughput >= 70% of loopback: ${met(pct === undefined ? undefined : pct >= 70)} (the run's limit)`
    + `${t?.['x-wire-share-now'] === undefined ? '' : `, ${met(t['x-wire-share-now'] >= 0.7)}${inRounds(ours, undefined, (i) => i['x-wire-share-now'], (a) => a >= 0.7)} (${(100 * t['x-wire-share-now']).toFixed(0)}%, each against the C pair just before it`
      + `${q?.['x-wire-share-now'] === undefined ? '' : `; QEMU ${(100 * q['x-wire-share-now']).toFixed(0)}%`})`}`);
}
if (values.phases) {
  console.log('\n  tsvmm switch-over phases, medians (ms): pause = kick to parked, STOP and SWITCHOVER out; to END = sync, last');
  console.log('  pages, capture, encode, END written; wake = END written to the destination reading it; load = decode, END');
  console.log('  check, restore; LOADED, COMMIT = the hops; start = COMMIT read to the vCPU running; total = pause to that');
  for (const { label, phases } of results) console.log(`  ${label.padEnd(15)}  ${formatPhases(phases)}`);
}
console.log('\n  targets (throughput = ram.transferred / total-time; an idle guest is mostly zero pages, sent as flags,');
console.log('  so its wire rate measures page scanning, not the link):');
for (const v of verdicts) console.log(v);
const args = `--sizes ${values.sizes} --cases ${values.cases} --dirty-bytes ${values['dirty-bytes']} --downtime-limit ${downtimeLimitMs} --timeout ${values.timeout} --loopback-seconds ${loopbackSeconds}${multifdChannels > 0 ? ` --multifd ${multifdChannels}` : ''}${rounds > 1 ? ` --rounds ${rounds}` : ''}${values.phases ? ' --phases' : ''}${destinationPrealloc ? ' --destination-prealloc' : ''}${values.verify ? ' --verify' : ''}`;
console.log(`  reproduce: node bench/migrate.mjs ${args}`);
if (inNested) console.log(`  (run here as: scripts/nested-kvm/run.sh --mem 10G -- env TMPDIR=/dev/shm node bench/migrate.mjs ${args})`);
