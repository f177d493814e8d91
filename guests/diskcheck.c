/*
 * diskcheck: writes a stamped pattern over a virtio-blk disk, flushes,
 * reads everything back and verifies it, pass after pass, and reports
 * counts over serial. The stamp format and the output lines are documented
 * in README.md: host tests check both, and read the stamps out of the image
 * file afterwards.
 *
 * kmain (ring 0) parses the command line; the work runs in ring 3 (see
 * lib/usermode.h: some KVM hosts emulate CPL0 code instruction by
 * instruction). Requests are pipelined, `depth` in flight at once, and
 * completion is polled.
 */
#include "lib/cmdline.h"
#include "lib/exit.h"
#include "lib/multiboot.h"
#include "lib/serial.h"
#include "lib/usermode.h"
#include "lib/virtio.h"

#define SECTOR              512u

/* virtio-blk (virtio 1.x spec, 5.2). */
#define VIRTIO_BLK_F_SIZE_MAX   1
#define VIRTIO_BLK_F_RO         5
#define VIRTIO_BLK_F_FLUSH      9
#define VIRTIO_BLK_T_IN         0
#define VIRTIO_BLK_T_OUT        1
#define VIRTIO_BLK_T_FLUSH      4
#define VIRTIO_BLK_T_GET_ID     8
#define VIRTIO_BLK_S_OK         0
#define VIRTIO_BLK_S_IOERR      1
#define VIRTIO_BLK_S_UNSUPP     2
#define VIRTIO_BLK_ID_BYTES     20
#define CFG_CAPACITY            0       /* u64, in 512-byte sectors */
#define CFG_SIZE_MAX            8       /* u32, bytes per segment */

/* Exit statuses (guest_exit codes; QEMU exits with code << 1 | 1). */
#define EXIT_PASS           0x10        /* QEMU 33 */
#define EXIT_VERIFY_FAILED  0x11        /* QEMU 35 */
#define EXIT_WRITE_ERRORS   0x12        /* QEMU 37 */
#define EXIT_DEVICE_ERROR   0x13        /* QEMU 39 */
#define EXIT_BAD_CMDLINE    0x14        /* QEMU 41 */

/* The stamp of one sector (README.md, "diskcheck"). All little-endian. */
#define STAMP_MAGIC         0x314b48434b534944ULL   /* "DISKCHK1" */
#define STAMP_WORDS         121                     /* u32s at 24..507 */
#define FNV_OFFSET          0x811c9dc5u
#define FNV_PRIME           0x01000193u

#define MAX_DEPTH           32
#define QUEUE_SIZE          128     /* >= MAX_DEPTH * 3 descriptors */
#define MAX_REQ_BYTES       (1u << 20)
#define BAD_LINES           8       /* bad sectors described one by one */

struct blk_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct req {
    struct blk_hdr *hdr;
    volatile uint8_t *status;
    uint8_t *data;
    uint64_t lba;
    uint32_t nsect;
    int busy;
};

static struct {
    uint64_t sectors, req_bytes, depth, run, passes, verify_only;
    uint64_t stamp;             /* 0: move data only (benchmarks) */
} cfg;

static struct virtio_dev dev;
static struct virtq vq;
static struct req reqs[MAX_DEPTH];
static int req_of_head[QUEUE_SIZE];
static uint64_t in_flight;

/* Per pass. */
static uint64_t wrote, read_sectors, ok, bad;
static uint64_t write_fail, read_fail, fail_ioerr, fail_unsupp, fail_other;
static uint64_t first_fail_lba, first_fail_status;

__attribute__((noreturn)) static void fail(uint32_t code, const char *why)
{
    serial_puts("diskcheck: FAIL ");
    serial_puts(why);
    serial_putc('\n');
    guest_exit(code);
}

static void put_kv(const char *key, uint64_t v)
{
    serial_puts(key);
    serial_put_dec(v);
}

/* ---- the stamp ---- */

static uint32_t fnv1a(const uint8_t *p, uint32_t n)
{
    uint32_t h = FNV_OFFSET;

    while (n--)
        h = (h ^ *p++) * FNV_PRIME;
    return h;
}

static void make_stamp(uint8_t *s, uint64_t lba, uint32_t run, uint32_t pass)
{
    uint32_t *w = (uint32_t *)(s + 24);

    *(uint64_t *)(s + 0) = STAMP_MAGIC;
    *(uint64_t *)(s + 8) = lba;
    *(uint32_t *)(s + 16) = run;
    *(uint32_t *)(s + 20) = pass;
    for (uint32_t k = 0; k < STAMP_WORDS; k++)
        w[k] = (uint32_t)lba * 0x9e3779b1u + run * 0x85ebca6bu + pass * 0xc2b2ae35u + k * 0x27d4eb2fu;
    *(uint32_t *)(s + 508) = fnv1a(s, 508);
}

static void check_sector(const uint8_t *s, uint64_t lba, uint32_t pass)
{
    uint8_t want[SECTOR];
    uint32_t i;

    make_stamp(want, lba, (uint32_t)cfg.run, pass);
    for (i = 0; i < SECTOR && s[i] == want[i]; i++)
        ;
    if (i == SECTOR) {
        ok++;
        return;
    }
    if (bad++ < BAD_LINES) {
        serial_puts("diskcheck: bad sector ");
        serial_put_dec(lba);
        serial_puts(": magic=");
        serial_put_hex(*(const uint64_t *)s);
        put_kv(" lba=", *(const uint64_t *)(s + 8));
        put_kv(" run=", *(const uint32_t *)(s + 16));
        put_kv(" pass=", *(const uint32_t *)(s + 20));
        serial_puts(fnv1a(s, 508) == *(const uint32_t *)(s + 508) ? " sum=ok" : " sum=bad");
        put_kv(" first-diff-byte=", i);
        put_kv(" expected run=", cfg.run);
        put_kv(" pass=", pass);
        serial_putc('\n');
    }
}

/* ---- requests ---- */

static void count_failure(struct req *r, uint8_t status)
{
    if (status == VIRTIO_BLK_S_IOERR)
        fail_ioerr++;
    else if (status == VIRTIO_BLK_S_UNSUPP)
        fail_unsupp++;
    else
        fail_other++;
    /* The lowest failing sector, not the first failure seen: requests
     * complete in any order, and the report should not depend on it. */
    if (write_fail + read_fail == 0 || r->lba < first_fail_lba) {
        first_fail_lba = r->lba;
        first_fail_status = status;
    }
}

static void complete(struct req *r, uint32_t pass)
{
    uint8_t status = *r->status;

    if (r->hdr->type == VIRTIO_BLK_T_OUT) {
        if (status == VIRTIO_BLK_S_OK) {
            wrote += r->nsect;
        } else {
            count_failure(r, status);
            write_fail++;
        }
    } else if (status == VIRTIO_BLK_S_OK) {
        read_sectors += r->nsect;
        for (uint32_t i = 0; cfg.stamp && i < r->nsect; i++)
            check_sector(r->data + (uint64_t)i * SECTOR, r->lba + i, pass);
    } else {
        count_failure(r, status);
        read_fail++;
    }
    r->busy = 0;
    in_flight--;
}

/* Waits for at least one completion and handles every one that is there. */
static void reap(uint32_t pass)
{
    int head, seen = 0;
    uint32_t len;

    for (;;) {
        head = virtq_get_used(&vq, &len);
        if (head == -2)
            fail(EXIT_DEVICE_ERROR, "device broke the used ring");
        if (head < 0) {
            if (seen)
                break;
            continue;
        }
        seen = 1;
        complete(&reqs[req_of_head[head]], pass);
    }
    virtio_ack_interrupt(&dev);
}

static void submit(struct req *r, uint32_t type, uint64_t lba, uint32_t nsect)
{
    struct virtq_buf b[3];
    unsigned n = 0;
    int head;

    r->hdr->type = type;
    r->hdr->reserved = 0;
    r->hdr->sector = lba;
    *r->status = 0xff;          /* no status yet: the device must write one */
    r->lba = lba;
    r->nsect = nsect;
    b[n++] = (struct virtq_buf){ (uintptr_t)r->hdr, sizeof(struct blk_hdr), 0 };
    if (type == VIRTIO_BLK_T_GET_ID)
        b[n++] = (struct virtq_buf){ (uintptr_t)r->data, VIRTIO_BLK_ID_BYTES, 1 };
    else if (nsect)
        b[n++] = (struct virtq_buf){ (uintptr_t)r->data, nsect * SECTOR, type == VIRTIO_BLK_T_IN };
    b[n++] = (struct virtq_buf){ (uintptr_t)r->status, 1, 1 };
    head = virtq_add(&vq, b, n);
    if (head < 0)
        fail(EXIT_DEVICE_ERROR, "no free descriptors (driver bug)");
    req_of_head[head] = (int)(r - reqs);
    r->busy = 1;
    in_flight++;
}

static struct req *free_req(uint32_t pass)
{
    for (;;) {
        for (uint64_t i = 0; i < cfg.depth; i++)
            if (!reqs[i].busy)
                return &reqs[i];
        reap(pass);
    }
}

/* One request on its own, waited for; returns it (status and data). */
static struct req *sync_request(uint32_t type)
{
    struct req *r = free_req(0);
    int head;

    submit(r, type, 0, 0);
    virtq_kick(&vq);
    while ((head = virtq_get_used(&vq, 0)) == -1)
        ;
    if (head < 0 || &reqs[req_of_head[head]] != r)
        fail(EXIT_DEVICE_ERROR, "device completed a request that was not in flight");
    r->busy = 0;
    in_flight--;
    virtio_ack_interrupt(&dev);
    return r;
}

/* Sweeps the disk with `type` requests of up to req_bytes, depth at once. */
static void sweep(uint32_t type, uint32_t pass)
{
    uint64_t per_req = cfg.req_bytes / SECTOR;

    for (uint64_t lba = 0; lba < cfg.sectors;) {
        struct req *r = free_req(pass);
        uint32_t n = (uint32_t)(cfg.sectors - lba < per_req ? cfg.sectors - lba : per_req);

        if (type == VIRTIO_BLK_T_OUT && cfg.stamp)
            for (uint32_t i = 0; i < n; i++)
                make_stamp(r->data + (uint64_t)i * SECTOR, lba + i, (uint32_t)cfg.run, pass);
        submit(r, type, lba, n);
        virtq_kick(&vq);
        lba += n;
    }
    while (in_flight)
        reap(pass);
}

static void print_id(void)
{
    struct req *r = sync_request(VIRTIO_BLK_T_GET_ID);
    uint8_t status = *r->status;

    serial_puts("diskcheck: id=");
    if (status != VIRTIO_BLK_S_OK) {
        serial_puts("unavailable status=");
        serial_put_dec(status);
    } else {
        /* Up to 20 bytes, NUL-terminated only if shorter (spec 5.2.6). */
        serial_putc('"');
        for (int i = 0; i < VIRTIO_BLK_ID_BYTES && r->data[i]; i++) {
            uint8_t c = r->data[i];
            serial_putc(c >= 0x20 && c < 0x7f && c != '"' ? (char)c : '?');
        }
        serial_putc('"');
    }
    serial_putc('\n');
}

static void run_pass(uint32_t pass)
{
    const char *flushed = "not flushed";

    wrote = read_sectors = ok = bad = 0;
    write_fail = read_fail = fail_ioerr = fail_unsupp = fail_other = 0;

    if (!cfg.verify_only) {
        sweep(VIRTIO_BLK_T_OUT, pass);
        if (!(dev.features & (1ULL << VIRTIO_BLK_F_FLUSH))) {
            flushed = "flush unsupported";
        } else {
            uint8_t s = *sync_request(VIRTIO_BLK_T_FLUSH)->status;
            flushed = s == VIRTIO_BLK_S_OK ? "flushed" : "flush failed";
            if (s != VIRTIO_BLK_S_OK) {
                struct req r0 = { .lba = 0 };
                count_failure(&r0, s);
                write_fail++;
            }
        }
    }
    /* Data a failed write left behind is not worth checking. */
    if (!write_fail)
        sweep(VIRTIO_BLK_T_IN, pass);

    put_kv("diskcheck: pass ", pass);
    put_kv(": wrote ", wrote);
    serial_puts(" sectors, ");
    serial_puts(flushed);
    put_kv(", read ", read_sectors);
    put_kv(", ok ", ok);
    put_kv(", bad ", bad);
    serial_putc('\n');

    if (write_fail || read_fail) {
        serial_puts(write_fail ? "diskcheck: write errors: " : "diskcheck: read errors: ");
        serial_put_dec(write_fail ? write_fail : read_fail);
        serial_puts(" requests failed");
        put_kv(" (IOERR ", fail_ioerr);
        put_kv(", UNSUPP ", fail_unsupp);
        put_kv(", other ", fail_other);
        put_kv("), first at sector ", first_fail_lba);
        put_kv(" status ", first_fail_status);
        serial_putc('\n');
        if (write_fail)
            fail(EXIT_WRITE_ERRORS, "write errors");
        fail(EXIT_DEVICE_ERROR, "read errors");
    }
    if (bad)
        fail(EXIT_VERIFY_FAILED, "verify");
    if (virtio_status(&dev) & VIRTIO_STATUS_NEEDS_RESET)
        fail(EXIT_DEVICE_ERROR, "device set DEVICE_NEEDS_RESET");
}

/* ---- ring 3 from here on ---- */

static void run(void *unused)
{
    uint64_t capacity, size_max;

    (void)unused;
    if (virtio_find(VIRTIO_ID_BLOCK, &dev))
        fail(EXIT_DEVICE_ERROR, "no usable virtio-blk device");
    if (virtio_negotiate(&dev, (1ULL << VIRTIO_BLK_F_RO) | (1ULL << VIRTIO_BLK_F_FLUSH) |
                               (1ULL << VIRTIO_BLK_F_SIZE_MAX)))
        fail(EXIT_DEVICE_ERROR, "feature negotiation");
    if (virtq_setup(&dev, &vq, 0, QUEUE_SIZE))
        fail(EXIT_DEVICE_ERROR, "queue setup");
    if (vq.size < cfg.depth * 3)
        cfg.depth = vq.size / 3;
    capacity = virtio_config64(&dev, CFG_CAPACITY);
    if (dev.features & (1ULL << VIRTIO_BLK_F_SIZE_MAX)) {
        size_max = virtio_config32(&dev, CFG_SIZE_MAX) & ~(uint64_t)(SECTOR - 1);
        if (size_max && cfg.req_bytes > size_max)
            cfg.req_bytes = size_max;
    }
    if (!cfg.sectors)
        cfg.sectors = capacity;
    if (cfg.sectors > capacity) {
        put_kv("diskcheck: sectors=", cfg.sectors);
        put_kv(" is more than the disk's capacity ", capacity);
        serial_putc('\n');
        fail(EXIT_BAD_CMDLINE, "command line");
    }
    for (uint64_t i = 0; i < cfg.depth; i++) {
        reqs[i].hdr = virtio_alloc(sizeof(struct blk_hdr), 16);
        reqs[i].status = virtio_alloc(1, 1);
        reqs[i].data = virtio_alloc(cfg.req_bytes, 4096);
        if (!reqs[i].hdr || !reqs[i].status || !reqs[i].data)
            fail(EXIT_BAD_CMDLINE, "req x depth does not fit the DMA area");
    }
    virtio_driver_ok(&dev);

    put_kv("diskcheck: slot=", dev.slot);
    put_kv(" capacity=", capacity);
    put_kv(" sectors=", cfg.sectors);
    put_kv(" req=", cfg.req_bytes);
    put_kv(" depth=", cfg.depth);
    put_kv(" run=", cfg.run);
    put_kv(" passes=", cfg.passes);
    put_kv(" ro=", !!(dev.features & (1ULL << VIRTIO_BLK_F_RO)));
    put_kv(" flush=", !!(dev.features & (1ULL << VIRTIO_BLK_F_FLUSH)));
    put_kv(" verify-only=", cfg.verify_only);
    if (!cfg.stamp)
        serial_puts(" stamp=0");
    serial_putc('\n');
    print_id();

    if (cfg.verify_only) {
        run_pass((uint32_t)cfg.passes);
    } else {
        for (uint64_t pass = 1; cfg.passes == 0 || pass <= cfg.passes; pass++) {
            run_pass((uint32_t)pass);
            /* One look at COM1 per pass: `q` ends a passes=0 run cleanly. */
            if (serial_try_getc() == 'q') {
                put_kv("diskcheck: quit after pass ", pass);
                serial_putc('\n');
                break;
            }
        }
    }
    serial_puts("diskcheck: PASS\n");
    guest_exit(EXIT_PASS);
}

/* ---- ring 0 ---- */

__attribute__((noreturn)) static void bad_cmdline(const char *why)
{
    serial_puts("diskcheck: bad command line: ");
    serial_puts(why);
    serial_putc('\n');
    guest_exit(EXIT_BAD_CMDLINE);
}

void kmain(uint32_t magic, uint32_t mbi)
{
    const struct multiboot_info *mi = multiboot_info(mbi);
    const char *cmd;

    serial_init();
    if (magic != MULTIBOOT_BOOTLOADER_MAGIC || !(mi->flags & MULTIBOOT_INFO_MEMORY))
        bad_cmdline("not booted by a multiboot loader with memory info");
    cmd = multiboot_cmdline(mbi);
    cfg.sectors = cmdline_get_num(cmd, "sectors", 0);
    cfg.req_bytes = cmdline_get_num(cmd, "req", 64 * 1024);
    cfg.depth = cmdline_get_num(cmd, "depth", 4);
    cfg.run = cmdline_get_num(cmd, "run", 1);
    cfg.passes = cmdline_get_num(cmd, "passes", 1);
    cfg.verify_only = cmdline_get_num(cmd, "verify-only", 0);
    cfg.stamp = cmdline_get_num(cmd, "stamp", 1);

    if (!cfg.req_bytes || cfg.req_bytes % SECTOR || cfg.req_bytes > MAX_REQ_BYTES)
        bad_cmdline("req= must be a multiple of 512 from 512 to 1M");
    if (!cfg.depth || cfg.depth > MAX_DEPTH)
        bad_cmdline("depth= must be 1 to 32");
    if (cfg.run > 0xffffffffULL || cfg.passes > 0xffffffffULL)
        bad_cmdline("run= and passes= must fit in 32 bits");
    if (cfg.verify_only && !cfg.passes)
        bad_cmdline("verify-only=1 needs passes=N, the pass whose stamps to expect");
    if (virtio_mem_init(0x100000 + (uint64_t)mi->mem_upper * 1024))
        bad_cmdline("too little RAM");

    usermode_init();
    usermode_enter(run, 0);
}
