/** The control plane: QMP in front of a VmControl, a QMP client, and the socket addresses both take. */
export { AddressError, formatSocketAddress, parseSocketAddress, toSocketAddress, type SocketAddress } from './qmp-address.js';
export { QmpClient, QmpConnectionError, QmpError, type QmpClientOptions, type QmpEvent, type QmpGreeting } from './qmp-client.js';
export { QMP_COMMANDS, type QmpErrorClass } from './qmp-commands.js';
export { QmpListenError, QmpServer, type QmpServerOptions } from './qmp-server.js';
export * from './vm-control.js';
