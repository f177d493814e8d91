/*
 * Minimal virtio-mmio driver library: the virtio 1.x MODERN transport only
 * (MMIO register layout version 2), split virtqueues, polled completion.
 *
 * Where the devices are: QEMU's -M microvm puts its virtio-mmio transports
 * in a window at 0xfeb00000, one 512-byte slot each (VIRTIO_MMIO_BASE in
 * include/hw/i386/microvm.h; microvm_devices_init() in hw/i386/microvm.c).
 * With ACPI on and the second IOAPIC (ioapic2=auto, the default) there are
 * IOAPIC_NUM_PINS = 24 slots on GSIs 24..47 (IO_APIC_SECONDARY_IRQBASE in
 * include/hw/intc/ioapic.h); with ACPI on and ioapic2=off, 8 slots on GSIs
 * 16..23; with acpi=off, 8 slots on GSIs 5..12. Slot i is at
 * 0xfeb00000 + i * 512 with GSI base + i. QEMU fills the slots from the TOP
 * down in command-line order: bus_add_child() (hw/core/qdev.c) inserts each
 * transport at the head of the system bus's child list, and
 * qbus_find_recursive() (softmmu/qdev-monitor.c) gives a -device the first
 * free virtio-mmio bus in that list, i.e. the highest-numbered one. So the
 * first -device lands in slot 23 (0xfeb02e00), the second in slot 22...
 * virtio_find() therefore scans from the top slot down, so "the first
 * device of type T" is the first one on the command line.
 *
 * Interrupts stay off in these guests (IF=0, IOAPIC pins masked); drivers
 * poll the used rings, and still read and acknowledge InterruptStatus as a
 * driver should, so a device's interrupt line does not stay asserted.
 *
 * Memory the devices see (rings, request headers, buffers) comes from a
 * bump allocator over a fixed physical range, VIRTIO_DMA_START up to
 * VIRTIO_DMA_END (clamped to the end of RAM), outside the guest image and
 * the fixed areas other guests use (see guests/README.md).
 */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include <stdint.h>

#define VIRTIO_MMIO_WINDOW      0xfeb00000ULL   /* QEMU include/hw/i386/microvm.h */
#define VIRTIO_MMIO_SLOT_SIZE   0x200
#define VIRTIO_MMIO_SLOTS       24              /* IOAPIC_NUM_PINS with ioapic2 */

#define VIRTIO_DMA_START        0x400000ULL     /* 4 MiB */
#define VIRTIO_DMA_END          0x1000000ULL    /* 16 MiB (dirtier's default start) */

/* Device IDs (virtio 1.x spec, 5 "Device Types"). */
#define VIRTIO_ID_NET           1
#define VIRTIO_ID_BLOCK         2

/* Transport feature bits (virtio 1.x spec, 6 "Reserved Feature Bits"). */
#define VIRTIO_F_VERSION_1      32

/* Device status bits (virtio 1.x spec, 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE   1
#define VIRTIO_STATUS_DRIVER        2
#define VIRTIO_STATUS_DRIVER_OK     4
#define VIRTIO_STATUS_FEATURES_OK   8
#define VIRTIO_STATUS_NEEDS_RESET   64
#define VIRTIO_STATUS_FAILED        128

/* Split virtqueue layout (virtio 1.x spec, 2.6). */
#define VIRTQ_DESC_F_NEXT       1
#define VIRTQ_DESC_F_WRITE      2   /* device writes this buffer */
#define VIRTQ_USED_F_NO_NOTIFY  1

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];        /* size entries, then used_event (unused: no EVENT_IDX) */
};

struct virtq_used_elem {
    uint32_t id;            /* head descriptor of the completed chain */
    uint32_t len;           /* bytes the device wrote into the chain */
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[];
};

#define VIRTQ_MAX_SIZE          256

struct virtio_dev {
    volatile uint8_t *regs;     /* the slot's MMIO registers */
    unsigned slot;
    uint32_t device_id;
    uint64_t features;          /* negotiated */
};

struct virtq {
    struct virtio_dev *dev;
    uint16_t index;             /* queue number on the device */
    uint16_t size;              /* descriptors, a power of two */
    volatile struct virtq_desc *desc;
    volatile struct virtq_avail *avail;
    volatile struct virtq_used *used;
    uint16_t free_head;         /* free descriptors form a list through .next */
    uint16_t num_free;
    uint16_t avail_idx;         /* our copy of avail->idx */
    uint16_t last_used;         /* used->idx we have consumed up to */
    uint16_t chain_len[VIRTQ_MAX_SIZE]; /* per head: descriptors to free */
};

/* One buffer of a chain given to virtq_add(). */
struct virtq_buf {
    uint64_t addr;
    uint32_t len;
    int device_writes;          /* 1: device-writable (VIRTQ_DESC_F_WRITE) */
};

/* Sets where DMA memory ends: min(ram_end, VIRTIO_DMA_END). Returns 0, or -1
 * (with a message) if RAM does not cover VIRTIO_DMA_START..+1 MiB. */
int virtio_mem_init(uint64_t ram_end);

/* Zeroed memory for the devices: align must be a power of two. Returns 0
 * (with a message on serial) when the range is exhausted. */
void *virtio_alloc(uint64_t size, uint64_t align);

/*
 * Finds the first device (top slot first, see above) whose DeviceID is
 * device_id. Returns 0 and fills d; -1 if none (message printed); -2 if the
 * device only speaks the legacy (version 1) registers, which this library
 * refuses with a message naming the QEMU option that fixes it.
 */
int virtio_find(uint32_t device_id, struct virtio_dev *d);

/*
 * Resets the device and negotiates features: accepts the device's features
 * that are in `wanted` plus VIRTIO_F_VERSION_1 (which the device must offer),
 * sets FEATURES_OK and checks the device kept it. Returns 0, or -1 with a
 * message (status FAILED is then set on the device).
 */
int virtio_negotiate(struct virtio_dev *d, uint64_t wanted);

/* Sets up queue `index` with min(QueueNumMax, size) descriptors (size a
 * power of two <= VIRTQ_MAX_SIZE) and marks it ready. Returns 0 or -1. */
int virtq_setup(struct virtio_dev *d, struct virtq *q, uint16_t index, uint16_t size);

/* Sets DRIVER_OK: the device may now use the queues. */
void virtio_driver_ok(struct virtio_dev *d);

/* Marks the device FAILED (the driver gives up on it). */
void virtio_fail(struct virtio_dev *d);

/* The device's status register (NEEDS_RESET shows a broken device). */
uint32_t virtio_status(struct virtio_dev *d);

/* Device-specific configuration space (offset from 0x100). The 64-bit read
 * retries until ConfigGeneration is stable around both halves. */
uint8_t  virtio_config8(struct virtio_dev *d, uint32_t off);
uint16_t virtio_config16(struct virtio_dev *d, uint32_t off);
uint32_t virtio_config32(struct virtio_dev *d, uint32_t off);
uint64_t virtio_config64(struct virtio_dev *d, uint32_t off);

/*
 * Puts a chain of n buffers in the available ring (not yet visible to a
 * device that is not notified; see virtq_kick). Returns the head descriptor
 * id, which virtq_get_used() gives back on completion, or -1 if fewer than n
 * descriptors are free.
 */
int virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n);

/* The head id the next virtq_add() will use, or -1 if no descriptor is
 * free: lets a driver whose chains are single descriptors keep one buffer
 * per descriptor and fill buffer[head] before adding it. */
static inline int virtq_next_head(const struct virtq *q)
{
    return q->num_free ? q->free_head : -1;
}

/* Publishes added chains and notifies the device unless it asked not to be
 * (VIRTQ_USED_F_NO_NOTIFY). */
void virtq_kick(struct virtq *q);

/* Next completed chain: its head id (its descriptors are free again) and,
 * in *len, the bytes the device wrote. -1 if nothing has completed; -2 if
 * the device returned an id that was not in flight (message printed). */
int virtq_get_used(struct virtq *q, uint32_t *len);

/* Reads InterruptStatus and acknowledges whatever it shows. Returns it. */
uint32_t virtio_ack_interrupt(struct virtio_dev *d);

#endif
