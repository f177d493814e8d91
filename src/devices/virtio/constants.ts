/**
 * Numbers from the virtio 1.x specification (OASIS virtio-v1.1, sections 2 "Basic Facilities",
 * 4.2 "Virtio Over MMIO", 5.2 "Block Device", 5.1 "Network Device"), under the spec's names.
 */

/** 4.2.2 MMIO Device Register Layout (version 2, "modern"): byte offsets in a transport's window. */
export const MmioReg = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;

/** "virt" in little-endian ASCII. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** The modern (non-legacy) register layout. */
export const VIRTIO_MMIO_VERSION = 2;
/** "QEMU" in little-endian ASCII: the vendor ID QEMU's transports report, so guests see the same. */
export const VIRTIO_MMIO_VENDOR_ID = 0x554d4551;

/** 2.1 Device Status Field. */
export const Status = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;

/** InterruptStatus bits (4.2.2). */
export const Interrupt = {
  /** The device used a buffer in at least one active virtqueue. */
  USED_BUFFER: 1,
  /** The configuration changed (or the device needs a reset). */
  CONFIG_CHANGE: 2,
} as const;

/** Feature bits independent of the device type (6 Reserved Feature Bits), as bit numbers. */
export const Feature = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
} as const;

/** 5 Device Types. */
export const DeviceId = {
  NET: 1,
  BLOCK: 2,
} as const;

/** 2.6.5 The Virtqueue Descriptor Table: struct virtq_desc flags. */
export const DescFlag = {
  NEXT: 1,
  WRITE: 2,
  INDIRECT: 4,
} as const;
/** sizeof(struct virtq_desc): addr u64, len u32, flags u16, next u16. */
export const DESC_SIZE = 16;
/** struct virtq_avail flags: the driver does not want interrupts. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used->flags bit: the device asks the driver not to notify it of new buffers (2.6.7.1, advisory). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** 5.2.3 Block feature bits. */
export const BlkFeature = {
  SEG_MAX: 2,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
} as const;

/** 5.2.6 Block request types. */
export const BlkType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
} as const;

/** 5.2.6 Block request status byte. */
export const BlkStatus = {
  OK: 0,
  IOERR: 1,
  UNSUPP: 2,
} as const;

/** Bytes in a virtio-blk sector (always 512, whatever blk_size says). */
export const BLK_SECTOR_SIZE = 512;
/** The GET_ID answer is at most this many bytes (VIRTIO_BLK_ID_BYTES). */
export const BLK_ID_BYTES = 20;

/** 5.1.3 Network feature bits. */
export const NetFeature = {
  MAC: 5,
  STATUS: 16,
} as const;
/** 5.1.4 struct virtio_net_config status: VIRTIO_NET_S_LINK_UP. */
export const NET_S_LINK_UP = 1;
/** sizeof(struct virtio_net_hdr) with VERSION_1 (num_buffers included): 12 bytes before every frame. */
export const NET_HDR_SIZE = 12;
