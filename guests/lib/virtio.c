#include "virtio.h"
#include "serial.h"

/* virtio-mmio registers, version 2 layout (virtio 1.x spec, 4.2.2). */
#define REG_MAGIC               0x000   /* "virt" */
#define REG_VERSION             0x004
#define REG_DEVICE_ID           0x008
#define REG_DEVICE_FEATURES     0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES     0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL           0x030
#define REG_QUEUE_NUM_MAX       0x034
#define REG_QUEUE_NUM           0x038
#define REG_QUEUE_READY         0x044
#define REG_QUEUE_NOTIFY        0x050
#define REG_INTERRUPT_STATUS    0x060
#define REG_INTERRUPT_ACK       0x064
#define REG_STATUS              0x070
#define REG_QUEUE_DESC_LOW      0x080
#define REG_QUEUE_DESC_HIGH     0x084
#define REG_QUEUE_DRIVER_LOW    0x090
#define REG_QUEUE_DRIVER_HIGH   0x094
#define REG_QUEUE_DEVICE_LOW    0x0a0
#define REG_QUEUE_DEVICE_HIGH   0x0a4
#define REG_CONFIG_GENERATION   0x0fc
#define REG_CONFIG              0x100

#define MMIO_MAGIC              0x74726976
#define MMIO_VERSION_LEGACY     1
#define MMIO_VERSION_MODERN     2

/* Compiler barrier; x86 keeps stores in order and loads in order. */
#define barrier() __asm__ volatile("" ::: "memory")
/* Full barrier: orders our avail->idx store before the used->flags load. */
#define mb() __asm__ volatile("mfence" ::: "memory")

static uint64_t dma_next = VIRTIO_DMA_START, dma_end = VIRTIO_DMA_END;

static uint32_t rd32(struct virtio_dev *d, uint32_t off)
{
    return *(volatile uint32_t *)(d->regs + off);
}

static void wr32(struct virtio_dev *d, uint32_t off, uint32_t v)
{
    *(volatile uint32_t *)(d->regs + off) = v;
}

static void say(struct virtio_dev *d, const char *what)
{
    serial_puts("virtio: ");
    if (d) {
        serial_puts("slot ");
        serial_put_dec(d->slot);
        serial_puts(" at ");
        serial_put_hex((uintptr_t)d->regs);
        serial_puts(": ");
    }
    serial_puts(what);
}

int virtio_mem_init(uint64_t ram_end)
{
    dma_end = ram_end < VIRTIO_DMA_END ? ram_end : VIRTIO_DMA_END;
    dma_next = VIRTIO_DMA_START;
    if (dma_end < VIRTIO_DMA_START + 0x100000) {
        say(0, "not enough RAM for virtio buffers: need RAM up to ");
        serial_put_hex(VIRTIO_DMA_START + 0x100000);
        serial_puts(", have up to ");
        serial_put_hex(ram_end);
        serial_puts("\n");
        return -1;
    }
    return 0;
}

void *virtio_alloc(uint64_t size, uint64_t align)
{
    uint64_t at = (dma_next + align - 1) & ~(align - 1);
    uint8_t *p = (uint8_t *)(uintptr_t)at;

    if (at + size > dma_end || at + size < at) {
        say(0, "out of DMA memory: wanted ");
        serial_put_dec(size);
        serial_puts(" bytes, ");
        serial_put_dec(dma_end > dma_next ? dma_end - dma_next : 0);
        serial_puts(" left\n");
        return 0;
    }
    dma_next = at + size;
    for (uint64_t i = 0; i < size; i++)
        p[i] = 0;
    return p;
}

int virtio_find(uint32_t device_id, struct virtio_dev *d)
{
    for (int slot = VIRTIO_MMIO_SLOTS - 1; slot >= 0; slot--) {
        d->regs = (volatile uint8_t *)(uintptr_t)(VIRTIO_MMIO_WINDOW + (uint64_t)slot * VIRTIO_MMIO_SLOT_SIZE);
        d->slot = (unsigned)slot;
        d->features = 0;
        /* Empty slots read DeviceID 0; missing slots (8-slot layouts)
         * read as unassigned memory, which fails the magic check. */
        if (rd32(d, REG_MAGIC) != MMIO_MAGIC || rd32(d, REG_DEVICE_ID) != device_id)
            continue;
        d->device_id = device_id;
        uint32_t version = rd32(d, REG_VERSION);
        if (version == MMIO_VERSION_MODERN)
            return 0;
        if (version == MMIO_VERSION_LEGACY) {
            say(d, "device ");
            serial_put_dec(device_id);
            serial_puts(" offers only legacy virtio-mmio (version 1); this driver needs version 2: "
                        "run QEMU with -global virtio-mmio.force-legacy=false\n");
        } else {
            say(d, "unknown virtio-mmio version ");
            serial_put_dec(version);
            serial_puts("\n");
        }
        return -2;
    }
    say(0, "no device with DeviceID ");
    serial_put_dec(device_id);
    serial_puts(" in the virtio-mmio window\n");
    return -1;
}

uint32_t virtio_status(struct virtio_dev *d)
{
    return rd32(d, REG_STATUS);
}

void virtio_fail(struct virtio_dev *d)
{
    wr32(d, REG_STATUS, rd32(d, REG_STATUS) | VIRTIO_STATUS_FAILED);
}

int virtio_negotiate(struct virtio_dev *d, uint64_t wanted)
{
    uint64_t offered, accepted;

    /* Reset, then wait for it to read back 0 (spec 4.2.3.1: the driver
     * waits for the reset to complete). */
    wr32(d, REG_STATUS, 0);
    while (rd32(d, REG_STATUS) != 0)
        ;
    wr32(d, REG_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    wr32(d, REG_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);

    wr32(d, REG_DEVICE_FEATURES_SEL, 1);
    offered = (uint64_t)rd32(d, REG_DEVICE_FEATURES) << 32;
    wr32(d, REG_DEVICE_FEATURES_SEL, 0);
    offered |= rd32(d, REG_DEVICE_FEATURES);

    if (!(offered & (1ULL << VIRTIO_F_VERSION_1))) {
        say(d, "device does not offer VIRTIO_F_VERSION_1 (features ");
        serial_put_hex(offered);
        serial_puts(")\n");
        virtio_fail(d);
        return -1;
    }
    accepted = offered & (wanted | (1ULL << VIRTIO_F_VERSION_1));
    wr32(d, REG_DRIVER_FEATURES_SEL, 0);
    wr32(d, REG_DRIVER_FEATURES, (uint32_t)accepted);
    wr32(d, REG_DRIVER_FEATURES_SEL, 1);
    wr32(d, REG_DRIVER_FEATURES, (uint32_t)(accepted >> 32));

    wr32(d, REG_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(rd32(d, REG_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        say(d, "device refused features ");
        serial_put_hex(accepted);
        serial_puts(" (FEATURES_OK did not stick)\n");
        virtio_fail(d);
        return -1;
    }
    d->features = accepted;
    return 0;
}

int virtq_setup(struct virtio_dev *d, struct virtq *q, uint16_t index, uint16_t size)
{
    uint32_t max;
    uint64_t desc, avail, used;

    wr32(d, REG_QUEUE_SEL, index);
    if (rd32(d, REG_QUEUE_READY)) {
        say(d, "queue already ready after reset\n");
        return -1;
    }
    max = rd32(d, REG_QUEUE_NUM_MAX);
    if (max == 0) {
        say(d, "queue ");
        serial_put_dec(index);
        serial_puts(" does not exist\n");
        return -1;
    }
    if (size > VIRTQ_MAX_SIZE)
        size = VIRTQ_MAX_SIZE;
    while (size > max)
        size >>= 1;

    /* Alignments: descriptors 16, available ring 2, used ring 4 (spec
     * 2.6); a page each keeps them apart and simple to dump. */
    q->desc = virtio_alloc(sizeof(struct virtq_desc) * size, 4096);
    q->avail = virtio_alloc(sizeof(struct virtq_avail) + 2u * size + 2, 4096);
    q->used = virtio_alloc(sizeof(struct virtq_used) + sizeof(struct virtq_used_elem) * size + 2, 4096);
    if (!q->desc || !q->avail || !q->used)
        return -1;
    q->dev = d;
    q->index = index;
    q->size = size;
    for (uint16_t i = 0; i < size; i++)
        q->desc[i].next = (uint16_t)(i + 1);
    q->free_head = 0;
    q->num_free = size;
    q->avail_idx = 0;
    q->last_used = 0;

    desc = (uintptr_t)q->desc;
    avail = (uintptr_t)q->avail;
    used = (uintptr_t)q->used;
    wr32(d, REG_QUEUE_NUM, size);
    wr32(d, REG_QUEUE_DESC_LOW, (uint32_t)desc);
    wr32(d, REG_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    wr32(d, REG_QUEUE_DRIVER_LOW, (uint32_t)avail);
    wr32(d, REG_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
    wr32(d, REG_QUEUE_DEVICE_LOW, (uint32_t)used);
    wr32(d, REG_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
    wr32(d, REG_QUEUE_READY, 1);
    return 0;
}

void virtio_driver_ok(struct virtio_dev *d)
{
    wr32(d, REG_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                        VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

uint8_t virtio_config8(struct virtio_dev *d, uint32_t off)
{
    return *(volatile uint8_t *)(d->regs + REG_CONFIG + off);
}

uint16_t virtio_config16(struct virtio_dev *d, uint32_t off)
{
    return *(volatile uint16_t *)(d->regs + REG_CONFIG + off);
}

uint32_t virtio_config32(struct virtio_dev *d, uint32_t off)
{
    return rd32(d, REG_CONFIG + off);
}

uint64_t virtio_config64(struct virtio_dev *d, uint32_t off)
{
    uint32_t gen, lo, hi;

    do {
        gen = rd32(d, REG_CONFIG_GENERATION);
        lo = rd32(d, REG_CONFIG + off);
        hi = rd32(d, REG_CONFIG + off + 4);
    } while (rd32(d, REG_CONFIG_GENERATION) != gen);
    return (uint64_t)hi << 32 | lo;
}

int virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n)
{
    uint16_t head = q->free_head, i = head, last = head;

    if (n == 0 || n > q->num_free)
        return -1;
    for (unsigned k = 0; k < n; k++) {
        volatile struct virtq_desc *d = &q->desc[i];

        d->addr = bufs[k].addr;
        d->len = bufs[k].len;
        d->flags = (uint16_t)((bufs[k].device_writes ? VIRTQ_DESC_F_WRITE : 0) |
                              (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        last = i;
        i = d->next;
    }
    /* The free list continues after the chain; the chain's last .next is
     * left pointing there, harmless without F_NEXT. */
    q->free_head = q->desc[last].next;
    q->num_free = (uint16_t)(q->num_free - n);
    q->chain_len[head] = (uint16_t)n;
    q->avail->ring[q->avail_idx & (q->size - 1)] = head;
    q->avail_idx++;
    return head;
}

void virtq_kick(struct virtq *q)
{
    barrier();                      /* ring entries before the index */
    q->avail->idx = q->avail_idx;
    mb();                           /* index before reading used->flags */
    if (!(q->used->flags & VIRTQ_USED_F_NO_NOTIFY))
        wr32(q->dev, REG_QUEUE_NOTIFY, q->index);
}

int virtq_get_used(struct virtq *q, uint32_t *len)
{
    uint16_t head, n, i;

    if (q->used->idx == q->last_used)
        return -1;
    barrier();                      /* index before the element it covers */
    volatile struct virtq_used_elem *e = &q->used->ring[q->last_used & (q->size - 1)];
    head = (uint16_t)e->id;
    if (len)
        *len = e->len;
    q->last_used++;
    if (head >= q->size || q->chain_len[head] == 0) {
        say(q->dev, "device returned a descriptor that was not in flight: ");
        serial_put_dec(head);
        serial_puts("\n");
        return -2;
    }
    /* Give the chain back: walk to its tail and splice the free list on. */
    n = q->chain_len[head];
    q->chain_len[head] = 0;
    i = head;
    for (uint16_t k = 1; k < n; k++)
        i = q->desc[i].next;
    q->desc[i].next = q->free_head;
    q->free_head = head;
    q->num_free = (uint16_t)(q->num_free + n);
    return head;
}

uint32_t virtio_ack_interrupt(struct virtio_dev *d)
{
    uint32_t s = rd32(d, REG_INTERRUPT_STATUS);

    if (s)
        wr32(d, REG_INTERRUPT_ACK, s);
    return s;
}
