import { isIP } from 'node:net';
import { DiskError, FileBlockBackend } from '../devices/virtio/block-backend.js';
import { NetError, TapNetBackend, UdpNetBackend, type HostPort } from '../devices/virtio/net-backends.js';
import { DEFAULT_MAC } from '../devices/virtio/virtio-net.js';
import type { VirtioDeviceSpec } from '../machine/virtio-devices.js';

/** A --disk or --net value that does not parse; the message names the option and what to write. */
export class DeviceOptionError extends Error {
  override name = 'DeviceOptionError';
}

/** A device option as parsed, before its backend is opened. */
export type DeviceOption =
  | { kind: 'disk'; path: string; readOnly: boolean }
  | { kind: 'net-udp'; local: HostPort; remote: HostPort; mac: Uint8Array }
  | { kind: 'net-tap'; ifname: string; mac: Uint8Array };

/** `--disk PATH[,readonly]`. */
export function parseDiskOption(value: string): DeviceOption {
  const parts = value.split(',');
  const path = parts[0]!;
  if (path === '') throw new DeviceOptionError(`--disk: missing PATH (--disk PATH[,readonly])`);
  let readOnly = false;
  for (const p of parts.slice(1)) {
    if (p === 'readonly' || p === 'readonly=on') readOnly = true;
    else if (p === 'readonly=off') readOnly = false;
    else throw new DeviceOptionError(`--disk ${value}: unknown option '${p}' (only 'readonly' is known)`);
  }
  return { kind: 'disk', path, readOnly };
}

/** `--net udp,local=HOST:PORT,remote=HOST:PORT[,mac=..]` or `--net tap,ifname=NAME[,mac=..]`. */
export function parseNetOption(value: string): DeviceOption {
  const [backend, ...rest] = value.split(',');
  const opts = new Map<string, string>();
  for (const p of rest) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new DeviceOptionError(`--net ${value}: '${p}' is not KEY=VALUE`);
    opts.set(p.slice(0, eq), p.slice(eq + 1));
  }
  const mac = opts.has('mac') ? parseMac(opts.get('mac')!) : DEFAULT_MAC;
  const allow = (keys: string[]) => {
    for (const k of opts.keys()) if (!keys.includes(k)) throw new DeviceOptionError(`--net ${value}: unknown option '${k}' for ${backend} (known: ${keys.join(', ')})`);
  };
  if (backend === 'udp') {
    allow(['local', 'remote', 'mac']);
    if (!opts.has('local') || !opts.has('remote')) throw new DeviceOptionError(`--net ${value}: udp needs local=HOST:PORT and remote=HOST:PORT`);
    return { kind: 'net-udp', local: parseHostPort(opts.get('local')!, 'local'), remote: parseHostPort(opts.get('remote')!, 'remote'), mac };
  }
  if (backend === 'tap') {
    allow(['ifname', 'mac']);
    const ifname = opts.get('ifname');
    if (ifname === undefined || ifname === '' || ifname.length > 15 || /[\s/]/.test(ifname)) {
      throw new DeviceOptionError(`--net ${value}: tap needs ifname=NAME (1 to 15 characters, no spaces or slashes)`);
    }
    return { kind: 'net-tap', ifname, mac };
  }
  throw new DeviceOptionError(`--net ${value}: unknown backend '${backend}' (use udp,local=HOST:PORT,remote=HOST:PORT or tap,ifname=NAME)`);
}

function parseHostPort(text: string, what: string): HostPort {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  if (m === null || isIP(m[1]!) === 0) throw new DeviceOptionError(`--net: ${what}=${text} is not IP:PORT (e.g. 127.0.0.1:5555)`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new DeviceOptionError(`--net: ${what}=${text}: the port must be 1 to 65535`);
  return { host: m[1]!, port };
}

function parseMac(text: string): Uint8Array {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(text);
  if (m === null) throw new DeviceOptionError(`--net: mac=${text} is not a MAC address like 52:54:00:12:34:56`);
  const mac = Uint8Array.from(m.slice(1).map((h) => parseInt(h, 16)));
  if (mac[0]! & 1) throw new DeviceOptionError(`--net: mac=${text} is a multicast address; a NIC needs a unicast one`);
  return mac;
}

/**
 * Opens every backend, in order; on any failure closes those already open and throws the first
 * problem (a DiskError or NetError naming the option), before any VM exists.
 */
export async function openDevices(options: readonly DeviceOption[]): Promise<VirtioDeviceSpec[]> {
  const specs: VirtioDeviceSpec[] = [];
  try {
    for (const o of options) {
      if (o.kind === 'disk') specs.push({ kind: 'blk', backend: await FileBlockBackend.open(o.path, o.readOnly) });
      else if (o.kind === 'net-udp') specs.push({ kind: 'net', backend: await UdpNetBackend.open(o.local, o.remote), mac: o.mac });
      else specs.push({ kind: 'net', backend: TapNetBackend.open(o.ifname), mac: o.mac });
    }
  } catch (e) {
    await Promise.allSettled(specs.map((s) => s.backend.close()));
    throw e;
  }
  return specs;
}
