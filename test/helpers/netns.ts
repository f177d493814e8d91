// Two "hosts" on one machine: network namespaces joined by a veth pair, made with iproute2 and
// removed afterwards. Needs root (CAP_NET_ADMIN) and the veth driver.
import { spawnSync } from 'node:child_process';

export interface HostPair {
  /** Command prefixes that run a program inside each host. */
  readonly a: { prefix: string[]; ip: string };
  readonly b: { prefix: string[]; ip: string };
  /**
   * Sets host `which`'s end of the link down (the other end then has no carrier, and every packet
   * between them is dropped, as when a host dies or drops off the network) or up again.
   */
  setLink(which: 'a' | 'b', up: boolean): void;
  remove(): void;
}

function ip(args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, err: (r.stderr ?? r.error?.message ?? '').trim() };
}

/** Makes the pair, or says why it cannot (not root, no iproute2, no veth). */
export function makeHostPair(tag: string): HostPair | { unavailable: string } {
  const nsA = `tsvmm-${tag}-a-${process.pid}`;
  const nsB = `tsvmm-${tag}-b-${process.pid}`;
  const remove = () => { ip(['netns', 'del', nsA]); ip(['netns', 'del', nsB]); };
  const steps: string[][] = [
    ['netns', 'add', nsA],
    ['netns', 'add', nsB],
    ['link', 'add', 'veth-a', 'netns', nsA, 'type', 'veth', 'peer', 'name', 'veth-b', 'netns', nsB],
    ['-n', nsA, 'addr', 'add', '10.211.0.1/24', 'dev', 'veth-a'],
    ['-n', nsB, 'addr', 'add', '10.211.0.2/24', 'dev', 'veth-b'],
    ['-n', nsA, 'link', 'set', 'veth-a', 'up'],
    ['-n', nsB, 'link', 'set', 'veth-b', 'up'],
    ['-n', nsA, 'link', 'set', 'lo', 'up'],
    ['-n', nsB, 'link', 'set', 'lo', 'up'],
  ];
  for (const step of steps) {
    const r = ip(step);
    if (!r.ok) {
      remove();
      return { unavailable: `ip ${step.join(' ')} failed: ${r.err || 'no output'}` };
    }
  }
  return {
    a: { prefix: ['ip', 'netns', 'exec', nsA], ip: '10.211.0.1' },
    b: { prefix: ['ip', 'netns', 'exec', nsB], ip: '10.211.0.2' },
    setLink(which, up) {
      const step = ['-n', which === 'a' ? nsA : nsB, 'link', 'set', `veth-${which}`, up ? 'up' : 'down'];
      const r = ip(step);
      if (!r.ok) throw new Error(`ip ${step.join(' ')} failed: ${r.err || 'no output'}`);
    },
    remove,
  };
}
