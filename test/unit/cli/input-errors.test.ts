import { describe, expect, it } from 'vitest';
import { INPUT_ERROR_NAMES } from '../../../src/cli/main.js';
import { DeviceOptionError } from '../../../src/cli/device-options.js';
import { DiskError } from '../../../src/devices/virtio/block-backend.js';
import { NetError } from '../../../src/devices/virtio/net-backends.js';
import { MigrationTransportError } from '../../../src/migration/transport.js';
import { QmpListenError } from '../../../src/control/qmp-server.js';
import { AddressError } from '../../../src/control/qmp-address.js';
import { TlsCredsError } from '../../../src/migration/tls.js';

describe('INPUT_ERROR_NAMES (the CLI matches the lazily imported rooms\' input errors by name)', () => {
  it('names exactly the input-error classes, by the name their instances carry', () => {
    const classes = [DeviceOptionError, DiskError, NetError, MigrationTransportError, QmpListenError, AddressError, TlsCredsError];
    expect(new Set(classes.map((C) => new C('x').name))).toEqual(INPUT_ERROR_NAMES);
  });
});
